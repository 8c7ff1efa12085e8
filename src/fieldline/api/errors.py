"""Every HTTP error is JSON `{"error": {"code", "message"}}`, never a trace."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from fieldline.devices.errors import BrokerUpdateError
from fieldline.storage.errors import AlreadyExistsError, InUseError, NotFoundError
from fieldline.storage.paging import InvalidCursorError

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class Problem(BaseModel):
    location: list[str] = Field(description='Where, e.g. ["body", "config"]')
    message: str


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable, e.g. not_found, validation_error")
    message: str = Field(description="What went wrong, for a person")
    details: list[Problem] | None = Field(
        None, description="validation_error only: every problem found"
    )


class ErrorBody(BaseModel):
    """What every error answers (the OpenAPI document's error responses name this)."""

    error: ErrorDetail


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers)

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(AlreadyExistsError)
    async def exists(_: Request, exc: AlreadyExistsError) -> JSONResponse:
        return error_response(409, "conflict", str(exc))

    @app.exception_handler(InUseError)
    async def in_use(_: Request, exc: InUseError) -> JSONResponse:
        return error_response(409, "conflict", str(exc))

    @app.exception_handler(BrokerUpdateError)
    async def broker_down(_: Request, exc: BrokerUpdateError) -> JSONResponse:
        return error_response(503, "broker_unavailable", str(exc))

    @app.exception_handler(InvalidCursorError)
    async def bad_cursor(_: Request, exc: InvalidCursorError) -> JSONResponse:
        return error_response(400, "bad_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"location": [str(p) for p in err.get("loc", ())], "message": err.get("msg", "")}
            for err in exc.errors()
        ]
        first = details[0] if details else {"location": [], "message": "invalid request"}
        where = ".".join(first["location"][1:]) or "request"
        return error_response(
            422, "validation_error", f"{where}: {first['message']}", details=details
        )

    @app.exception_handler(psycopg.DataError)
    async def unstorable(_: Request, exc: psycopg.DataError) -> JSONResponse:
        # A value JSON allows but PostgreSQL cannot store: a NUL character in text,
        # NaN or Infinity inside a JSON document. The caller's input, so a 422.
        return error_response(
            422, "invalid_value", f"a value cannot be stored: {str(exc).splitlines()[0]}"
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            allowed = _allowed_methods(request)
            headers = {**(headers or {}), "Allow": allowed}
            message = f"{request.method} is not allowed here; allowed: {allowed}"
        return error_response(exc.status_code, code, message, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unhandled error",
            exc_info=exc,
            extra={"path": request.url.path, "method": request.method},
        )
        return error_response(500, "internal_error", "internal error; see the server log")


def _allowed_methods(request: Request) -> str:
    """Every method of every route at this path.

    Starlette's 405 names only the methods of the first route whose path matched,
    though `GET` and `PUT` of one path are two routes.
    """
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))
