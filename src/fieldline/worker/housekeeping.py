"""Housekeeping jobs: partitions ahead, forgetting what is kept for a while, silent devices."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from fieldline.security.provisioning import SIGNATURE_MEMORY
from fieldline.storage import housekeeping
from fieldline.storage.db import Row
from fieldline.storage.locks import JobLock
from fieldline.worker.jobs import HOUSEKEEPING, Job, WorkerContext

log = logging.getLogger(__name__)

PARTITION_DAYS_AHEAD = 2
INGEST_ACTIVITY_KEPT = timedelta(days=1)  # the dashboard shows at most the last hour

Conn = AsyncConnection[Row]


def housekeeping_jobs(worker: WorkerContext) -> list[Job[Any]]:
    settings, metrics = worker.settings, worker.metrics

    async def partitions(conn: Conn, now: datetime) -> int | None:
        return await housekeeping.create_partitions_ahead(conn, now.date(), PARTITION_DAYS_AHEAD)

    async def forget_message_ids(conn: Conn, now: datetime) -> int | None:
        forgotten = await housekeeping.forget_message_ids(
            conn, now - timedelta(days=settings.dedup_window_days)
        )
        if forgotten:
            metrics.message_ids_forgotten.inc(forgotten)
            log.info("message ids forgotten", extra={"count": forgotten})
        return forgotten

    async def silent_offline(conn: Conn, now: datetime) -> list[str] | None:
        silent = await housekeeping.mark_silent_offline(
            conn, now - timedelta(seconds=settings.online_timeout_seconds), now
        )
        if silent:
            metrics.devices_timed_out.inc(len(silent))
            log.info(
                "silent devices marked offline",
                extra={"count": len(silent), "device_ids": silent[:20]},
            )
        return silent

    async def forget_rejected_messages(conn: Conn, now: datetime) -> int | None:
        rejected = await housekeeping.forget_rejected_messages(
            conn, now - timedelta(days=settings.rejected_retention_days)
        )
        if rejected:
            log.info("old rejected messages deleted", extra={"count": rejected})
        return rejected

    async def forget_ingest_activity(conn: Conn, now: datetime) -> int | None:
        return await housekeeping.forget_ingest_activity(conn, now - INGEST_ACTIVITY_KEPT)

    async def forget_provisioning_signatures(conn: Conn, now: datetime) -> int | None:
        return await housekeeping.forget_provisioning_signatures(conn, now - SIGNATURE_MEMORY)

    return [
        Job("partitions", HOUSEKEEPING, JobLock.PARTITIONS, partitions),
        Job("forget_message_ids", HOUSEKEEPING, JobLock.FORGET_MESSAGE_IDS, forget_message_ids),
        Job("silent_offline", HOUSEKEEPING, JobLock.SILENT_OFFLINE, silent_offline),
        Job(
            "forget_rejected_messages",
            HOUSEKEEPING,
            JobLock.FORGET_REJECTED_MESSAGES,
            forget_rejected_messages,
        ),
        Job(
            "forget_ingest_activity",
            HOUSEKEEPING,
            JobLock.FORGET_INGEST_ACTIVITY,
            forget_ingest_activity,
        ),
        Job(
            "forget_provisioning_signatures",
            HOUSEKEEPING,
            JobLock.FORGET_PROVISIONING_SIGNATURES,
            forget_provisioning_signatures,
        ),
    ]
