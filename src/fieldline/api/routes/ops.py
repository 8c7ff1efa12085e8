"""Liveness, readiness and Prometheus metrics (SPEC §7)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from fieldline.api.deps import Context
from fieldline.storage import devices as device_store
from fieldline.storage.migrate import pending_migrations

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])
# The longest each readiness probe (database, broker) may take.
PROBE_SECONDS = 2.0


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


@router.get("/health", response_model=Health)
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=Readiness, responses=_READY)
async def ready(context: Context) -> JSONResponse:
    """503 until the database is reachable, migrations applied and the broker up, and
    while ingest (when this process runs it) cannot write."""
    checks = {"database": False, "migrations": False, "broker": False}
    try:
        # Bounded: a database that hangs (not down, frozen) must not hang the probe too.
        async with asyncio.timeout(PROBE_SECONDS):
            async with context.pool.connection(timeout=PROBE_SECONDS) as conn:
                await conn.execute("SELECT 1")
                checks["database"] = True
                checks["migrations"] = not await pending_migrations(conn)
    except Exception:  # any failure means "not ready", which is the answer
        checks["database"] = False
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            checks["broker"] = context.broker_started.is_set() and await context.broker.healthy()
    except Exception:  # any failure means "not ready"
        checks["broker"] = False
    # `fieldline up` runs ingest beside the API (in process, or a child whose metrics it
    # reads): a batch it cannot write, or a lost broker session, stores nothing for anyone.
    checks.update(await context.metrics.ingest_checks())
    ok = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/metrics", response_class=Response, responses=_METRICS)
async def metrics(context: Context) -> Response:
    m = context.metrics
    try:
        async with asyncio.timeout(PROBE_SECONDS), context.pool.connection(timeout=2) as conn:
            since = datetime.now(UTC) - timedelta(seconds=context.settings.online_timeout_seconds)
            m.devices_online.set(await device_store.count_online(conn, since=since))
    except Exception as exc:  # metrics still answer while the database is down
        log.warning("devices online not counted", extra={"error": str(exc)})
    stats = context.pool.get_stats()
    m.db_pool_size.labels(state="size").set(stats.get("pool_size", 0))
    m.db_pool_size.labels(state="available").set(stats.get("pool_available", 0))
    m.db_pool_size.labels(state="waiting").set(stats.get("requests_waiting", 0))
    return Response(await m.render_all(), media_type=CONTENT_TYPE_LATEST)
