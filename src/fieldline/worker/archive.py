"""The archive job: closed hours of raw points (and closed days' aggregates) to Parquet,
every five minutes, a bounded number of files per round so a backlog (an archive
configured on a year of history) proceeds round after round without starving the rest."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from fieldline.archive import run as archive_run
from fieldline.blobs.base import BlobStore, BlobStoreError
from fieldline.blobs.open import location, open_store
from fieldline.storage import archive
from fieldline.storage.archive import ArchivedFile
from fieldline.storage.db import Row
from fieldline.storage.locks import JobLock, session_job_lock
from fieldline.worker.jobs import Job, Schedule, WorkerContext

log = logging.getLogger(__name__)

ARCHIVE = Schedule("archive", lambda _settings: 300.0)
FILES_PER_ROUND = 48


@dataclass(frozen=True, slots=True)
class ArchiveRound:
    written: list[ArchivedFile]
    pending: int  # files still due after this round
    error: str | None


def archive_jobs(worker: WorkerContext) -> list[Job[Any]]:
    settings, metrics = worker.settings, worker.metrics
    if not settings.archive_url:
        return []
    target = location(settings.archive_url)
    stores: list[BlobStore] = []

    def store() -> BlobStore:
        if not stores:  # opened at the first round: a worker starts even if S3 is down
            stores.append(open_store(target, s3_endpoint_url=settings.s3_endpoint_url))
        return stores[0]

    async def run(conn: AsyncConnection[Row], now: datetime) -> ArchiveRound | None:
        async with session_job_lock(conn, JobLock.ARCHIVE) as got:
            if not got:
                return None
            due = await archive_run.due(conn, target, now)
            todo = archive_run.Due(
                due.hours[:FILES_PER_ROUND], due.days[: max(0, FILES_PER_ROUND - len(due.hours))]
            )
            written: list[ArchivedFile] = []
            error = None
            try:
                await archive_run.write(conn, store(), target, todo, written.append)
            except BlobStoreError as exc:
                error = str(exc)
                metrics.archive_failures.inc()
                log.error("archive run failed", extra={"target": target, "error": error})
            for file in written:
                metrics.archive_files_written.labels(kind=file.kind).inc()
                metrics.archive_rows_written.labels(kind=file.kind).inc(file.rows)
                metrics.archive_bytes_written.labels(kind=file.kind).inc(file.bytes)
            await archive.record_run(conn, target, now, written, error)
        pending = due.files - len(written)
        metrics.archive_pending_files.set(pending)
        if error is None:
            metrics.archive_last_success.set(time.time())
        return ArchiveRound(written, pending, error)

    return [
        Job(
            "archive",
            ARCHIVE,
            JobLock.ARCHIVE,
            run,
            again_at_once=lambda done: done.error is None and done.pending > 0,
        )
    ]
