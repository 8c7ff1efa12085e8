"""/health, /ready and /metrics: one implementation, for the API and the processes
that serve no API (`fieldline ingest` and `fieldline worker` on `ops_port`).

What differs between them is what "ready" checks and what /metrics gathers first,
given as functions of the request (the API's read its context from the app).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from fieldline.ops.headers import SecurityHeadersMiddleware
from fieldline.ops.metrics import Metrics

ReadyChecks = Callable[[], Awaitable[dict[str, bool]]]
# The same, for an app whose checks depend on the request's app (the API's context).
RequestChecks = Callable[[Request], Awaitable[dict[str, bool]]]
MetricsText = Callable[[Request], Awaitable[bytes]]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, bool] = Field(description="Each check and whether it passed")


_READY: dict[int | str, dict[str, Any]] = {
    200: {"model": Readiness, "description": "Every check passed"},
    503: {"model": Readiness, "description": "Not ready: `checks` tells which failed"},
}
_METRICS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format",
        # As served, less the charset: "text/plain; version=…" of prometheus_client.
        "content": {CONTENT_TYPE_LATEST.rsplit(";", 1)[0]: {"schema": {"type": "string"}}},
    }
}


def ops_router(
    *, checks: RequestChecks, metrics_text: MetricsText, ready_description: str | None = None
) -> APIRouter:
    """The three endpoints; `checks` all true is ready (200), else 503 saying which failed."""
    router = APIRouter(tags=["operations"])

    @router.get("/health", response_model=Health)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready", response_model=Readiness, responses=_READY, description=ready_description)
    async def ready(request: Request) -> JSONResponse:
        try:
            results = await checks(request)
        except Exception:  # any failure means "not ready", which is the answer
            results = {"checks": False}
        ok = all(results.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": results},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics", response_class=Response, responses=_METRICS)
    async def metrics(request: Request) -> Response:
        return Response(await metrics_text(request), media_type=CONTENT_TYPE_LATEST)

    return router


def ops_app(*, metrics: Metrics, checks: ReadyChecks) -> FastAPI:
    """The operations endpoints as an app of their own (ingest, worker)."""

    async def ready_checks(_: Request) -> dict[str, bool]:
        return await checks()

    async def metrics_text(_: Request) -> bytes:
        return await metrics.render_all()

    app = FastAPI(title="fieldline operations", openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(ops_router(checks=ready_checks, metrics_text=metrics_text))
    app.add_middleware(SecurityHeadersMiddleware)
    return app
