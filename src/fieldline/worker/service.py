"""The worker: runs every registered job on its schedule until told to stop.

Several workers may run (for availability); each job's advisory lock makes
the others skip it rather than do it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from fieldline.alerts.jobs import alert_jobs
from fieldline.broker.publisher import Publisher
from fieldline.config import Settings
from fieldline.downlink.jobs import downlink_jobs
from fieldline.notify.dispatcher import notify_jobs
from fieldline.ops.metrics import Metrics
from fieldline.ota.jobs import ota_jobs
from fieldline.storage.db import Pool
from fieldline.worker.archive import archive_jobs
from fieldline.worker.backup import backup_jobs
from fieldline.worker.certificates import certificate_jobs
from fieldline.worker.health import health_jobs
from fieldline.worker.housekeeping import housekeeping_jobs
from fieldline.worker.jobs import Job, JobSource, Schedule, WorkerContext
from fieldline.worker.retention import retention_jobs

log = logging.getLogger(__name__)

R = TypeVar("R")

# Every feature's jobs. Jobs sharing a schedule run in this order.
FEATURES: tuple[JobSource, ...] = (
    housekeeping_jobs,
    archive_jobs,
    retention_jobs,
    downlink_jobs,
    alert_jobs,
    notify_jobs,
    backup_jobs,
    ota_jobs,
    certificate_jobs,
    health_jobs,
)


class Worker:
    def __init__(
        self,
        *,
        settings: Settings,
        pool: Pool,
        metrics: Metrics,
        publisher: Publisher | None = None,
        features: Sequence[JobSource] = FEATURES,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._metrics = metrics
        self._woken: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        context = WorkerContext(
            settings=settings, metrics=metrics, publisher=publisher, wake=self.wake
        )
        self.jobs: list[Job[Any]] = [job for source in features for job in source(context)]
        _refuse_clashes(self.jobs)
        self.rounds: Counter[str] = Counter()  # rounds completed, by schedule name
        self.last_runs: dict[str, JobRun] = {}  # by job name: what the heartbeat reports

    @property
    def schedules(self) -> list[Schedule]:
        return list(dict.fromkeys(job.schedule for job in self.jobs))

    async def run(self, stopping: asyncio.Event) -> None:
        """Run each schedule's round now, then again after its interval, until `stopping`."""
        async with asyncio.TaskGroup() as group:
            for schedule in self.schedules:
                group.create_task(self._repeat(schedule, stopping), name=schedule.name)

    def wake(self, schedule: Schedule) -> None:
        """Run `schedule`'s next round at once (after the one running, if any)."""
        self._woken[schedule.name].set()

    async def _repeat(self, schedule: Schedule, stopping: asyncio.Event) -> None:
        woken = self._woken[schedule.name]
        while not stopping.is_set():
            woken.clear()  # a wake during the round runs it again: it may have missed that
            if await self.run_round(schedule):
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    _first(stopping, woken), timeout=schedule.seconds(self._settings)
                )

    async def run_round(self, schedule: Schedule) -> bool:
        """Run the schedule's jobs once, in order; True when one asks to run again at once."""
        now = datetime.now(UTC)
        again = False
        for job in self.jobs:
            if job.schedule == schedule:
                result = await self._attempt(job, now)
                again |= (
                    result is not None
                    and job.again_at_once is not None
                    and job.again_at_once(result)
                )
        self.rounds[schedule.name] += 1
        return again

    async def run_job(self, name: str) -> Any:
        """Run one job now (whatever its schedule); its answer, None if skipped or failed."""
        (job,) = [job for job in self.jobs if job.name == name]
        return await self._attempt(job, datetime.now(UTC))

    async def _attempt(self, job: Job[R], now: datetime) -> R | None:
        started = time.monotonic()
        try:
            async with self._pool.connection() as conn:
                result = await job.run(conn, now)
        except Exception as error:
            # The next round tries again; a failed job must not stop the others.
            self._metrics.worker_jobs.labels(job=job.name, outcome="failed").inc()
            log.exception("worker job failed", extra={"job": job.name})
            self._record(job.name, now, started, "failed", f"{type(error).__name__}: {error}")
            return None
        outcome = "skipped" if result is None else "done"
        self._metrics.worker_jobs.labels(job=job.name, outcome=outcome).inc()
        self._record(job.name, now, started, outcome, None)
        return result

    def _record(
        self, name: str, now: datetime, started: float, outcome: str, error: str | None
    ) -> None:
        before = self.last_runs.get(name)
        self.last_runs[name] = JobRun(
            at=now,
            seconds=time.monotonic() - started,
            outcome=outcome,
            error=error[:500] if error else None,
            last_done=now if outcome == "done" else (before.last_done if before else None),
            failures_in_a_row=(before.failures_in_a_row + 1 if before else 1)
            if outcome == "failed"
            else 0,
        )

    def report(self) -> dict[str, Any]:
        """The jobs' last runs, for the heartbeat (`ops.heartbeat`)."""
        return {"jobs": {name: run.json() for name, run in sorted(self.last_runs.items())}}


@dataclass(frozen=True, slots=True)
class JobRun:
    """A job's last attempt, and its last that did its work."""

    at: datetime
    seconds: float
    outcome: str  # done, skipped (another worker had it), failed
    error: str | None
    last_done: datetime | None
    failures_in_a_row: int

    def json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "seconds": round(self.seconds, 3),
            "outcome": self.outcome,
            "error": self.error,
            "last_done": self.last_done.isoformat() if self.last_done else None,
            "failures_in_a_row": self.failures_in_a_row,
        }


async def _first(*events: asyncio.Event) -> None:
    """Return once any of `events` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _refuse_clashes(jobs: Sequence[Job[Any]]) -> None:
    """Two jobs of one name would share their metrics; of one lock, exclude each other."""
    for what, keys in (
        ("name", [job.name for job in jobs]),
        ("lock", [job.lock for job in jobs if job.lock is not None]),
    ):
        repeated = sorted(str(key) for key, count in Counter(keys).items() if count > 1)
        if repeated:
            raise ValueError(f"worker jobs share a {what}: {', '.join(repeated)}")
