"""create_app(context): the HTTP API as an ASGI application."""

from __future__ import annotations

from fastapi import FastAPI

import fieldline
from fieldline.api.context import ApiContext
from fieldline.api.errors import install_error_handlers
from fieldline.api.middleware import RequestContextMiddleware
from fieldline.api.routes import (
    audit,
    auth,
    commands,
    config,
    device_http,
    devices,
    emqx,
    fleet,
    groups,
    ops,
    provisioning,
    rejected,
    streams,
    telemetry,
    users,
)
from fieldline.web import mount_dashboard

DESCRIPTION = """fieldline's HTTP API. Sign in with `POST /api/v1/auth/login` and send the
access token as `Authorization: Bearer …`, or send an API key as `X-API-Key`.
Errors are `{"error": {"code", "message"}}`; list calls answer `{"items", "next_cursor"}`."""


def create_app(context: ApiContext) -> FastAPI:
    app = FastAPI(title="fieldline", version=fieldline.__version__, description=DESCRIPTION)
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
    ):
        app.include_router(module.router)
    app.include_router(auth.keys_router)
    mount_dashboard(app)
    app.add_middleware(RequestContextMiddleware, metrics=context.metrics)
    return app
