"""create_app(context): the HTTP API as an ASGI application."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, get_args

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import RouteContext, iter_route_contexts
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

import fieldline
from fieldline.api.context import ApiContext
from fieldline.api.deps import (
    Admin,
    Operator,
    Viewer,
    get_caller,
    get_current_user,
    get_stream_viewer,
)
from fieldline.api.errors import ErrorBody, install_error_handlers
from fieldline.api.middleware import (
    BodyLimit,
    BodyLimitMiddleware,
    RequestContextMiddleware,
    Route,
)
from fieldline.api.routes import (
    alert_rules,
    alerts,
    audit,
    auth,
    channels,
    commands,
    config,
    device_http,
    devices,
    emqx,
    export,
    firmware,
    fleet,
    group_ops,
    groups,
    maps,
    metrics_meta,
    notifications,
    ops,
    provisioning,
    rejected,
    rollouts,
    silences,
    storage,
    streams,
    system,
    telemetry,
    users,
)
from fieldline.config import Settings
from fieldline.ops.headers import SecurityHeadersMiddleware
from fieldline.web import mount_api_docs, mount_dashboard

DESCRIPTION = """fieldline's HTTP API. Sign in with `POST /api/v1/auth/login` and send the
access token as `Authorization: Bearer …`, or send an API key as `X-API-Key`.
Errors are `{"error": {"code", "message"}}`; list calls answer `{"items", "next_cursor"}`.
A request body over `FIELDLINE_MAX_REQUEST_BODY_BYTES` (1 MiB by default) is answered 413."""

_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}
_ERRORS = {
    400: "bad_request: a malformed cursor, or a body that cannot be read",
    401: "unauthorized: no valid access token or API key",
    403: "forbidden: the caller's role does not allow this",
    404: "not_found: what the path names does not exist",
    413: "payload_too_large: the body is over the route's limit",
    422: "validation_error (`details` lists every problem) or another refusal of the input",
    429: "rate_limited: too many failed API keys from this address or for this key; "
    "see Retry-After",
}
# The dependencies that authenticate the caller (401), and those that also check a role (403).
_ROLE_CHECKS = frozenset(get_args(role)[1].dependency for role in (Viewer, Operator, Admin))
_AUTHENTICATES = frozenset({get_caller, get_current_user, get_stream_viewer, *_ROLE_CHECKS})
_CHECKS_ROLE = frozenset({get_stream_viewer, *_ROLE_CHECKS})


class _Api(FastAPI):
    """FastAPI, with the error answers of every operation in its OpenAPI document."""

    _documented: dict[str, Any] | None = None

    def openapi(self) -> dict[str, Any]:
        schema = super().openapi()
        if self._documented is not schema:  # FastAPI builds it once and keeps it
            _document_errors(schema, self.routes)
            self._documented = schema
        return schema


def create_app(context: ApiContext) -> FastAPI:
    # /docs is fieldline's own page (fieldline.web), served without internet access; no ReDoc.
    app = _Api(
        title="fieldline",
        version=fieldline.__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    app.state.context = context
    install_error_handlers(app)
    for module in (
        auth,
        users,
        groups,
        devices,
        telemetry,
        rejected,
        ops,
        emqx,
        audit,
        fleet,
        streams,
        device_http,
        provisioning,
        commands,
        config,
        alert_rules,
        alerts,
        silences,
        channels,
        notifications,
        storage,
        export,
        metrics_meta,
        maps,
        group_ops,
        firmware,
        rollouts,
        system,
    ):
        app.include_router(module.router)
    app.include_router(auth.keys_router)
    mount_dashboard(app)
    mount_api_docs(app)
    settings = context.settings
    app.add_middleware(
        BodyLimitMiddleware,
        default=BodyLimit(settings.max_request_body_bytes),
        routes=_own_body_limits(app, settings),
    )
    app.add_middleware(RequestContextMiddleware, metrics=context.metrics)
    if settings.cors_origin_list:
        # Off unless configured: only the listed origins, with the bearer token in a header
        # (no cookies cross origins), and the correlation id readable by the page.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Correlation-ID"],
            expose_headers=["X-Correlation-ID"],
            max_age=600,
        )
    # Outermost: on every answer, errors too.
    app.add_middleware(SecurityHeadersMiddleware, image_origin=settings.map_tiles_origin)
    return app


def _own_body_limits(app: FastAPI, settings: Settings) -> list[tuple[Route, BodyLimit]]:
    """The routes whose bodies have a limit other than `max_request_body_bytes`."""
    wanted = {
        ("POST", "/api/v1/devices/{device_id}/telemetry"): BodyLimit(
            settings.max_payload_bytes, reads_oversize=True
        ),
        ("POST", "/provision"): BodyLimit(provisioning.MAX_BODY_BYTES),
        # The image and its form fields.
        ("POST", "/api/v1/firmware"): BodyLimit(settings.firmware_max_bytes + 64 * 1024),
    }
    found: list[tuple[Route, BodyLimit]] = []
    for route in _operations(app.routes):
        for method in route.methods or ():
            limit = wanted.pop((method, route.path_format or ""), None)
            if limit is not None:
                found.append((route, limit))
    if wanted:
        raise RuntimeError(f"body limits for routes that do not exist: {sorted(wanted)}")
    return found


def _operations(routes: list[BaseRoute]) -> Iterator[RouteContext]:
    for route in iter_route_contexts(routes):
        if getattr(route, "dependant", None) is not None:
            yield route


def _document_errors(schema: dict[str, Any], routes: list[BaseRoute]) -> None:
    """Add the error answers each operation can give, derived from what it depends on.

    The ones that follow from the route's shape are added here, once, for all of them:
    401/403 from the authentication and role dependencies, 404 from an id in the path,
    400 from a cursor, 413 and 422 from a body or parameters. Answers particular to an
    operation (409, 429, 503, ...) are declared on its route with `responses=`; they get
    the error schema here too.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_body.pop("$defs"), ErrorBody=error_body)
    for route in _operations(routes):
        operations = schema["paths"].get(route.path_format or "", {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is None:
                continue  # not in the document (include_in_schema=False)
            answers = operation.setdefault("responses", {})
            for status in _derived_errors(route, operation):
                answers.setdefault(str(status), {"description": _ERRORS[status]})
            for status, answer in answers.items():
                if status.isdigit() and int(status) >= 400:
                    _error_content(answer)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


def _error_content(answer: dict[str, Any]) -> None:
    """An error answer's body is ErrorBody, unless the route gave another (/ready's 503);
    also where FastAPI put its own 422 schema, which fieldline never answers."""
    given = answer.get("content", {}).get("application/json", {}).get("schema", {})
    if given.get("$ref", "").endswith("/HTTPValidationError"):
        answer["description"] = _ERRORS[422]
    elif given:
        return
    answer["content"] = {"application/json": {"schema": _ERROR_SCHEMA}}


def _derived_errors(route: RouteContext, operation: dict[str, Any]) -> set[int]:
    dependant: Dependant = route.dependant
    calls = _calls(dependant)
    errors: set[int] = set()
    if calls & _AUTHENTICATES:
        errors |= {401, 429}  # 429: failed API keys are limited (api/auth_limits.py)
    if calls & _CHECKS_ROLE:
        errors.add(403)
    params = [p.alias for d in _tree(dependant) for p in (*d.path_params, *d.query_params)]
    if "{" in (route.path_format or ""):
        errors.add(404)
    if "cursor" in params:
        errors.add(400)
    if "requestBody" in operation:
        errors |= {400, 413, 422}
    if params:
        errors.add(422)
    return errors


def _tree(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _tree(sub)


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    return {d.call for d in _tree(dependant) if d.call is not None}
