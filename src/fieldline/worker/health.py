"""The worker's `health` job: judge fieldline's own health from the heartbeats and raise
or resolve its system alerts (docs/monitoring.md, "Without Prometheus").

One judge at a time (its lock); the failing checks and their start are in the database,
so a judge that restarts, or another process that takes over (`fieldline api` while no
worker is running: `standby_jobs`), carries on where the last left off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fieldline.alerts.system import raise_and_resolve
from fieldline.domain.health import down_after, judge
from fieldline.notify.dispatcher import NOTIFY
from fieldline.storage import health as health_store
from fieldline.storage.health import Conn
from fieldline.storage.locks import JobLock, try_job_lock
from fieldline.worker.jobs import Job, Schedule, WorkerContext

log = logging.getLogger(__name__)

HEALTH = Schedule("health", lambda settings: settings.heartbeat_seconds)


@dataclass(frozen=True, slots=True)
class Judged:
    failing: int
    opened: int
    resolved: int


def health_jobs(worker: WorkerContext) -> list[Job[Any]]:
    settings = worker.settings
    silent_for = down_after(settings.heartbeat_seconds)

    async def check(conn: Conn, _now: datetime) -> Judged | None:
        async with conn.transaction():
            if not await try_job_lock(conn, JobLock.HEALTH):
                return None
            now = await health_store.database_now(conn)
            await health_store.forget_processes(conn)
            findings = judge(
                now,
                await health_store.processes(conn),
                await health_store.backup_facts(conn),
                down_after=silent_for,
                archive_configured=settings.archive_url is not None,
            )
            failing = await health_store.record_findings(conn, findings, now)
            raised = await raise_and_resolve(conn, findings, failing, now)
        if raised.opened or raised.resolved:
            worker.wake(NOTIFY)
            log.warning(
                "system alerts changed",
                extra={
                    "opened": raised.opened,
                    "resolved": raised.resolved,
                    "failing": [f.key for f in failing],
                },
            )
        return Judged(len(failing), raised.opened, raised.resolved)

    return [Job("health", HEALTH, JobLock.HEALTH, check)]
