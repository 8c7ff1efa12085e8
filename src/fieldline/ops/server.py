"""/health, /ready and /metrics for the processes that serve no API (ingest, worker)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from fieldline.ops.headers import SecurityHeadersMiddleware
from fieldline.ops.metrics import Metrics

ReadyChecks = Callable[[], Awaitable[dict[str, bool]]]


def ops_app(*, metrics: Metrics, checks: ReadyChecks) -> FastAPI:
    app = FastAPI(title="fieldline operations", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        try:
            results = await checks()
        except Exception:  # any failure means "not ready", which is the answer
            results = {"checks": False}
        ok = all(results.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": results},
            status_code=200 if ok else 503,
        )

    @app.get("/metrics")
    async def render() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(SecurityHeadersMiddleware)
    return app
