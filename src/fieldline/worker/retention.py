"""Data over time: retention drops every tier's partitions past their age, and storage
accounting measures what is left; each once an hour, and at the worker's start."""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from fieldline.blobs.open import location
from fieldline.storage import accounting, retention
from fieldline.storage.db import Row
from fieldline.storage.locks import JobLock, session_job_lock, try_job_lock
from fieldline.storage.partitions import TIERS
from fieldline.worker.jobs import Job, Schedule, WorkerContext

log = logging.getLogger(__name__)

# Partitions span a day at the finest, so an hourly look is soon enough, and a worker
# that starts runs it at once.
RETENTION = Schedule("retention", lambda _settings: 3600.0)


def retention_jobs(worker: WorkerContext) -> list[Job[Any]]:
    settings, metrics = worker.settings, worker.metrics
    keep = {tier: settings.retention_days[tier.name] for tier in TIERS}
    target = location(settings.archive_url) if settings.archive_url else None

    async def apply(conn: AsyncConnection[Row], now: datetime) -> list[retention.TierRun] | None:
        # A session lock: a concurrent detach cannot run inside a transaction.
        async with session_job_lock(conn, JobLock.RETENTION) as got:
            if not got:
                return None
            runs = await retention.apply(conn, keep, now, target)
        for run in runs:
            tier = run.tier.name
            metrics.retention_partitions_dropped.labels(tier=tier).inc(len(run.dropped))
            metrics.retention_bytes_dropped.labels(tier=tier).inc(sum(p.bytes for p in run.dropped))
            metrics.retention_rows_dropped.labels(tier=tier).inc(sum(p.rows for p in run.dropped))
            metrics.retention_partitions_held.labels(tier=tier).set(len(run.held))
            if run.held:
                log.warning(
                    "retention keeps expired partitions the archive does not hold yet",
                    extra={"tier": tier, "partitions": [p.name for p in run.held]},
                )
            if run.dropped:
                log.info(
                    "retention dropped partitions",
                    extra={
                        "tier": tier,
                        "partitions": [p.name for p in run.dropped],
                        "bytes": sum(p.bytes for p in run.dropped),
                    },
                )
        metrics.retention_last_run.set(time.time())
        return runs

    async def measure(conn: AsyncConnection[Row], now: datetime) -> accounting.Snapshot | None:
        async with conn.transaction():
            if not await try_job_lock(conn, JobLock.STORAGE_ACCOUNTING):
                return None
            snapshot = await accounting.take_snapshot(conn, now)
            # The new snapshot is too recent to count: growth is since an older one.
            growth = await accounting.growth_per_day(conn, now, snapshot.database_bytes)
            tiers = await accounting.tier_sizes(conn)
        metrics.database_bytes.set(snapshot.database_bytes)
        for tier in tiers:
            metrics.storage_tier_bytes.labels(tier=tier.tier).set(tier.bytes)
            metrics.storage_tier_rows.labels(tier=tier.tier).set(tier.rows)
        metrics.storage_growth.set(math.nan if growth is None else growth)
        disk = accounting.database_disk(settings)
        days = accounting.days_until_full(disk.free_bytes, growth) if disk else None
        metrics.disk_free_bytes.set(disk.free_bytes if disk else math.nan)
        metrics.storage_days_until_full.set(math.nan if days is None else days)
        return snapshot

    return [
        Job("retention", RETENTION, JobLock.RETENTION, apply),
        # After retention, so that it measures what retention left.
        Job("storage_accounting", RETENTION, JobLock.STORAGE_ACCOUNTING, measure),
    ]
