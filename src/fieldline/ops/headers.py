"""The security headers every HTTP answer of fieldline carries: the API's, the dashboard's,
and the ops endpoints of ingest and worker processes."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


# One policy for every answer: the dashboard and /docs load nothing from elsewhere and run
# no inline script, and an API answer is never meant to be framed or rendered as a page.
# The one exception is a map's tile server (FIELDLINE_MAP_TILES_URL), whose images the
# dashboard's maps show: the API names its origin, and only in img-src.
def content_security_policy(image_origin: str | None = None) -> bytes:
    images = f"img-src 'self' data: {image_origin};" if image_origin else "img-src 'self' data:;"
    return (
        f"default-src 'self'; script-src 'self'; style-src 'self'; {images}"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ).encode()


SECURITY_HEADERS = (
    (b"content-security-policy", content_security_policy()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
# Answers carry data or credentials: no cache keeps them, unless the response chose its own
# caching (the dashboard's and /docs' static files revalidate with their ETag).
_NO_STORE = (b"cache-control", b"no-store")
# Only on an answer that went out over HTTPS: sent over plain HTTP it would be ignored by
# browsers at best, and would lock a site that has no certificate out at worst. A request
# came over HTTPS when its scheme says so, directly or, from a proxy in
# FIELDLINE_TRUSTED_PROXIES only, by its `X-Forwarded-Proto` (uvicorn rewrites the scheme).
# No includeSubDomains: other hosts under the same domain are not fieldline's to promise.
STRICT_TRANSPORT_SECURITY = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeadersMiddleware:
    """The same security headers on every response: API, errors, dashboard, /docs, /metrics."""

    def __init__(self, app: ASGIApp, image_origin: str | None = None) -> None:
        self.app = app
        self.headers = (
            (b"content-security-policy", content_security_policy(image_origin)),
            *SECURITY_HEADERS[1:],
            _NO_STORE,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in self.headers:
                    if name not in present:
                        headers.append((name, value))
                if scope.get("scheme") == "https":
                    headers.append(STRICT_TRANSPORT_SECURITY)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
