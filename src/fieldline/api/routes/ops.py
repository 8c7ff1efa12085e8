"""Liveness, readiness and Prometheus metrics of the API (SPEC §7), on ops/server.py's
endpoints: readiness here also covers migrations and the ingest `up` runs beside."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from fastapi import Request

from fieldline.api.deps import get_context
from fieldline.ops.server import ops_router
from fieldline.storage import devices as device_store
from fieldline.storage.migrate import pending_migrations

log = logging.getLogger(__name__)
# The longest each readiness probe (database, broker) may take.
PROBE_SECONDS = 2.0


async def _checks(request: Request) -> dict[str, bool]:
    context = get_context(request)
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
    return checks


async def _metrics_text(request: Request) -> bytes:
    context = get_context(request)
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
    return await m.render_all()


router = ops_router(
    checks=_checks,
    metrics_text=_metrics_text,
    ready_description="503 until the database is reachable, migrations applied and the "
    "broker up, and while ingest (when this process runs it) cannot write.",
)
