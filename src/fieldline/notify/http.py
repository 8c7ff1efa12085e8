"""One JSON POST to a receiver, answered as a Delivery: what the HTTP channels share."""

from __future__ import annotations

import functools
import ssl

import httpx

from fieldline.notify.base import SEND_TIMEOUT_SECONDS, Delivery, failed, retry_after_seconds

TIMEOUT = httpx.Timeout(SEND_TIMEOUT_SECONDS, connect=5.0)


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's TLS context (its CA bundle, or SSL_CERT_FILE), built once: httpx builds
    one per client otherwise, which was a fifteenth of a busy worker's time (`fieldline
    bench alerts`, a client per dispatcher round)."""
    return httpx.create_ssl_context()


def http_client() -> httpx.AsyncClient:
    """The client a dispatcher round (or one channel test) sends with.

    No redirects: a receiver that moved must be configured anew, and a redirect must
    not carry a signed body somewhere else. Proxies from the environment apply.
    """
    return httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, verify=_tls())


async def post_json(
    client: httpx.AsyncClient, url: str, content: bytes, headers: dict[str, str] | None = None
) -> Delivery:
    """POST `content` (already JSON) to `url`; ok on any 2xx."""
    try:
        response = await client.post(
            url, content=content, headers={"Content-Type": "application/json", **(headers or {})}
        )
    except httpx.TimeoutException:
        return failed(f"timed out after {SEND_TIMEOUT_SECONDS:g} s")
    except httpx.HTTPError as exc:
        return failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if response.is_success:
        return Delivery(ok=True, status_code=response.status_code)
    snippet = response.text[:200].strip()
    error = f"HTTP {response.status_code}" + (f": {snippet}" if snippet else "")
    return Delivery(
        ok=False,
        status_code=response.status_code,
        error=error,
        retry_after=retry_after_seconds(response.headers.get("Retry-After")),
    )
