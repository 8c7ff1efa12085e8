"""Daily backups in the worker, each proven to restore, the older ones pruned.

The `backup` job looks once an hour and backs up when the last backup to the configured
location is a day old, so that a worker that restarts (or several workers) never piles
up backups; an instance that has none yet is backed up once it is a day old (until then
`fieldline backup create` takes one). After each backup, the backups beyond the
keep-daily/keep-weekly rule are deleted. The `backup_verify` job then restores the
newest backup into a scratch database and compares it with its manifest, once per
backup. Both refresh the backup metrics from the database every round, so they are
right after a restart and count backups taken from the command line too.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo

from fieldline.backup import stored
from fieldline.backup.create import Created, create
from fieldline.backup.keep import to_keep
from fieldline.backup.verify import Verification, verify
from fieldline.blobs.base import BlobStore
from fieldline.blobs.open import open_store
from fieldline.config import Settings
from fieldline.ops.metrics import Metrics
from fieldline.storage import backups
from fieldline.storage.db import Row
from fieldline.storage.locks import JobLock, session_job_lock
from fieldline.worker.jobs import Job, Schedule, WorkerContext

log = logging.getLogger(__name__)

BACKUPS = Schedule("backup", lambda _settings: 3600.0)
DUE_EVERY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class BackupRound:
    """What a round of the `backup` job did: a backup and what it pruned, or nothing yet."""

    created: Created | None
    due_at: datetime | None = None  # when nothing was due: when the next one is
    pruned: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.created is None:
            return f"not due until {self.due_at:%Y-%m-%d %H:%M} UTC"
        made = self.created.manifest
        pruned = f"; pruned {', '.join(self.pruned)}" if self.pruned else ""
        return f"{made.id} written to {self.created.location} ({made.size:,} bytes){pruned}"


@dataclass(frozen=True, slots=True)
class VerifyRound:
    verification: Verification | None
    why_not: str = ""

    def __str__(self) -> str:
        done = self.verification
        if done is None:
            return self.why_not
        if done.ok:
            return f"{done.manifest.id} restored and matches its manifest"
        return f"{done.manifest.id} FAILED: {'; '.join(done.problems)}"


def backup_jobs(worker: WorkerContext) -> list[Job[Any]]:
    settings, metrics = worker.settings, worker.metrics

    async def back_up(conn: AsyncConnection[Row], now: datetime) -> BackupRound | None:
        async with session_job_lock(conn, JobLock.BACKUP) as got:
            if not got:
                return None
            store = _store(settings)
            last = await backups.last_backup(conn, store.url)
            _show_backup(metrics, last)
            since = last.finished_at if last else await backups.instance_created(conn)
            if since is not None and now < since + DUE_EVERY:
                return BackupRound(None, due_at=since + DUE_EVERY)
            try:
                created = await create(database_url(conn), settings.data_dir, store)
                pruned = await prune(conn, store, settings, now)
            except Exception:
                metrics.backup_failures.labels(step="backup").inc()
                raise
            _show_backup(metrics, await backups.last_backup(conn, store.url))
            return BackupRound(created, pruned=pruned)

    async def verify_newest(conn: AsyncConnection[Row], now: datetime) -> VerifyRound | None:
        async with session_job_lock(conn, JobLock.BACKUP_VERIFY) as got:
            if not got:
                return None
            store = _store(settings)
            _show_verified(metrics, await backups.last_verification(conn, ok=True))
            last = await backups.last_backup(conn, store.url)
            if last is None:
                return VerifyRound(None, f"no backup in {store.url} to verify yet")
            if await backups.verified(conn, store.url, last.id):
                return VerifyRound(None, f"{last.id}, the newest backup, is verified already")
            try:
                done = await verify(database_url(conn), store, last.id)
            except Exception:
                metrics.backup_failures.labels(step="verify").inc()
                raise
            if not done.ok:
                metrics.backup_failures.labels(step="verify").inc()
            _show_verified(metrics, await backups.last_verification(conn, ok=True))
            return VerifyRound(done)

    return [
        Job("backup", BACKUPS, JobLock.BACKUP, back_up),
        Job("backup_verify", BACKUPS, JobLock.BACKUP_VERIFY, verify_newest),
    ]


async def prune(
    conn: AsyncConnection[Row], store: BlobStore, settings: Settings, now: datetime
) -> list[str]:
    """Delete the backups the keep-daily/keep-weekly rule does not keep, and those that never
    finished (older than the newest finished one: no backup is being written meanwhile,
    as the job's lock says)."""
    found = await asyncio.to_thread(stored.listed, store)
    complete = [(backup.id, backup.taken_at) for backup in found if backup.complete]
    if not complete:
        return []
    keep = to_keep(complete, daily=settings.backup_keep_daily, weekly=settings.backup_keep_weekly)
    newest = max(moment for _, moment in complete)
    doomed = [
        backup.id
        for backup in found
        if (backup.complete and backup.id not in keep)
        or (not backup.complete and backup.taken_at < newest)
    ]
    for backup_id in doomed:
        await asyncio.to_thread(stored.delete, store, backup_id)
    if doomed:
        await backups.record_pruned(conn, store.url, doomed, now)
        log.info("backups pruned", extra={"location": store.url, "backups": doomed})
    return doomed


def database_url(conn: AsyncConnection[Row]) -> str:
    """The connection string of the database `conn` is connected to, for pg_dump and the
    backup's own connections (the worker is given a pool, not a URL)."""
    info = conn.info
    params = {
        **info.get_parameters(),
        "host": info.host,
        "port": str(info.port),
        "dbname": info.dbname,
        "user": info.user,
    }
    if info.password:
        params["password"] = info.password
    return make_conninfo("", **params)


def _store(settings: Settings) -> BlobStore:
    return open_store(settings.backup_location, s3_endpoint_url=settings.s3_endpoint_url)


def _show_backup(metrics: Metrics, last: backups.Taken | None) -> None:
    metrics.backup_last_success.set(last.finished_at.timestamp() if last else 0)
    metrics.backup_bytes.set(last.bytes if last else 0)


def _show_verified(metrics: Metrics, last: backups.Verified | None) -> None:
    metrics.backup_last_verified.set(last.verified_at.timestamp() if last else 0)
