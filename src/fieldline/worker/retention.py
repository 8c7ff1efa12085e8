"""The retention job: every tier's partitions past their age dropped, once an hour."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from fieldline.storage import retention
from fieldline.storage.db import Row
from fieldline.storage.locks import JobLock, session_job_lock
from fieldline.storage.partitions import DAILY, HOURLY, RAW
from fieldline.worker.jobs import Job, Schedule, WorkerContext

log = logging.getLogger(__name__)

# Partitions span a day at the finest, so an hourly look is soon enough, and a worker
# that starts runs it at once.
RETENTION = Schedule("retention", lambda _settings: 3600.0)


def retention_jobs(worker: WorkerContext) -> list[Job[Any]]:
    settings, metrics = worker.settings, worker.metrics
    keep = {
        RAW: settings.retention_raw_days,
        HOURLY: settings.retention_hourly_days,
        DAILY: settings.retention_daily_days,
    }

    async def apply(conn: AsyncConnection[Row], now: datetime) -> list[retention.TierRun] | None:
        # A session lock: a concurrent detach cannot run inside a transaction.
        async with session_job_lock(conn, JobLock.RETENTION) as got:
            if not got:
                return None
            runs = await retention.apply(conn, keep, now)
        for run in runs:
            tier = run.tier.name
            metrics.retention_partitions_dropped.labels(tier=tier).inc(len(run.dropped))
            metrics.retention_bytes_dropped.labels(tier=tier).inc(sum(p.bytes for p in run.dropped))
            metrics.retention_rows_dropped.labels(tier=tier).inc(sum(p.rows for p in run.dropped))
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

    return [Job("retention", RETENTION, JobLock.RETENTION, apply)]
