"""ASGI middleware: correlation id, request metrics and an access-log line per request;
request body limits; security headers."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fieldline.api.errors import error_response
from fieldline.ops.logging import correlation_id
from fieldline.ops.metrics import Metrics

log = logging.getLogger("fieldline.http")
HEADER = b"x-correlation-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HEADER, b"").decode("latin-1")
        cid = given if _VALID_ID.match(given) else uuid.uuid4().hex
        token = correlation_id.set(cid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (HEADER, cid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.http_requests.labels(method=method, route=path, status=str(status)).inc()
            self.metrics.http_duration.labels(method=method, route=path).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": method,
                    "path": scope["path"],
                    "route": path,
                    "status": status,
                    "ms": round(elapsed * 1000, 1),
                },
            )
            correlation_id.reset(token)


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """How many bytes of a request body a route may read."""

    max_bytes: int
    # The route reads its own body and answers an oversize one itself: HTTP ingest keeps
    # the first bytes of a too-large message in the rejected store. It is given up to
    # max_bytes + 1 bytes whatever Content-Length says, and nothing past that.
    reads_oversize: bool = False


class Route(Protocol):
    def matches(self, scope: Scope) -> tuple[Match, Scope]: ...


class BodyTooLargeError(HTTPException):
    def __init__(self, limit: BodyLimit) -> None:
        super().__init__(
            413, f"the request body is over {limit.max_bytes} bytes, this route's limit"
        )


class BodyLimitMiddleware:
    """No route reads more of a request body than its limit (SPEC §9: no input yields a crash).

    A Content-Length over the limit is answered 413 before anything is read; a body
    without one is counted as it arrives and cut off with 413 once past the limit.
    Starlette's own limit (`FastAPI(max_body_size=)`) is not used: it answers text/plain
    when the route has not read the body, and its per-route limits are fixed at import,
    where fieldline's come from settings.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: BodyLimit,
        routes: Sequence[tuple[Route, BodyLimit]] = (),
    ) -> None:
        self.app = app
        self.default = default
        self.routes = routes

    def _limit(self, scope: Scope) -> BodyLimit:
        for route, limit in self.routes:
            if route.matches(scope)[0] is Match.FULL:
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit.max_bytes and not limit.reads_oversize:
            await _too_large(limit)(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            if received > limit.max_bytes:
                raise BodyTooLargeError(limit)
            message = await receive()
            if message["type"] != "http.request":
                return message
            body: bytes = message.get("body", b"")
            received += len(body)
            if received <= limit.max_bytes:
                return message
            if not limit.reads_oversize:
                raise BodyTooLargeError(limit)
            # Exactly one byte over: the route sees that it is too large, and holds no more.
            return {**message, "body": body[: len(body) - (received - limit.max_bytes - 1)]}

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if received > limit.max_bytes:
                    # Else the server would read the rest of the body, only to discard it.
                    message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLargeError:
            # Raised where no error handler answers it (outside a FastAPI route).
            if started:
                raise
            await _too_large(limit)(scope, receive, send)


_CLOSE = (b"connection", b"close")


def _too_large(limit: BodyLimit) -> ASGIApp:
    # Answered without reading the body: the connection cannot carry another request.
    message = BodyTooLargeError(limit).detail
    return error_response(413, "payload_too_large", message, headers={"Connection": "close"})
