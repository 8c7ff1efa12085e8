"""The worker's job registry against real PostgreSQL: schedules, failures, locks."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection

from fieldline.config import Settings
from fieldline.ops.metrics import Metrics
from fieldline.storage.db import Pool, Row, open_pool
from fieldline.storage.locks import JobLock
from fieldline.worker.jobs import Job, JobSource, Schedule, WorkerContext
from fieldline.worker.service import Worker

OFTEN = Schedule("often", lambda _: 0.01)
SELDOM = Schedule("seldom", lambda _: 3600)


@pytest.fixture
async def pool(pg15_database_url: str) -> AsyncIterator[Pool]:
    pool = await open_pool(pg15_database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def counting(ran: Counter[str], name: str, answer: Any = 1) -> Any:
    async def run(conn: AsyncConnection[Row], now: datetime) -> Any:
        await conn.execute("SELECT 1")
        ran[name] += 1
        return answer

    return run


def source(*jobs: Job[Any]) -> JobSource:
    return lambda _context: jobs


async def running(worker: Worker, until: Callable[[], bool]) -> None:
    """Run the worker until `until` holds; it must stop at once when told to."""
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    try:
        async with asyncio.timeout(60):  # a loaded machine is slow; a stuck worker is a failure
            while not until():
                await asyncio.sleep(0.01)
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=10)


async def test_each_schedule_runs_on_its_own_interval(pool: Pool, settings: Settings) -> None:
    ran: Counter[str] = Counter()
    worker = Worker(
        settings=settings,
        pool=pool,
        metrics=Metrics(),
        features=[
            source(
                Job("hourly", SELDOM, None, counting(ran, "hourly")),
                Job("often", OFTEN, None, counting(ran, "often")),
            )
        ],
    )
    await running(worker, until=lambda: ran["often"] >= 5)
    # The hourly job ran at the start and is not due again; it never held the other back.
    assert ran["hourly"] == 1
    assert worker.rounds == Counter({"seldom": 1, "often": ran["often"]})


async def test_a_failing_job_is_logged_counted_and_retried_without_stopping_the_others(
    pool: Pool, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    ran: Counter[str] = Counter()

    async def broken(conn: AsyncConnection[Row], now: datetime) -> int:
        ran["broken"] += 1
        await conn.execute("SELECT no_such_column FROM pg_class")
        return 1

    metrics = Metrics()
    worker = Worker(
        settings=settings,
        pool=pool,
        metrics=metrics,
        features=[
            source(
                Job("broken", OFTEN, None, broken),
                Job("after", OFTEN, None, counting(ran, "after")),
            )
        ],
    )
    with caplog.at_level(logging.ERROR, logger="fieldline.worker.service"):
        await running(worker, until=lambda: ran["after"] >= 3)
    assert ran["broken"] >= 3
    sample = metrics.registry.get_sample_value
    assert (
        sample("fieldline_worker_jobs_total", {"job": "broken", "outcome": "failed"})
        == ran["broken"]
    )
    assert (
        sample("fieldline_worker_jobs_total", {"job": "after", "outcome": "done"}) == ran["after"]
    )
    failures = [r for r in caplog.records if r.getMessage() == "worker job failed"]
    assert failures and {getattr(r, "job", None) for r in failures} == {"broken"}
    assert "no_such_column" in (failures[0].exc_text or "")
    # What the heartbeat reports (the admin health page, the worker_job_failing check).
    jobs = worker.report()["jobs"]
    assert jobs["broken"]["outcome"] == "failed"
    assert jobs["broken"]["failures_in_a_row"] == ran["broken"]
    assert "UndefinedColumn" in jobs["broken"]["error"]
    assert jobs["broken"]["last_done"] is None
    assert jobs["after"]["outcome"] == "done" and jobs["after"]["failures_in_a_row"] == 0
    assert jobs["after"]["last_done"] == jobs["after"]["at"]


async def test_a_job_that_did_all_it_may_at_once_runs_again_without_waiting(
    pool: Pool, settings: Settings
) -> None:
    backlog = [True, True, True, False]

    async def drain(conn: AsyncConnection[Row], now: datetime) -> bool:
        return backlog.pop(0)

    worker = Worker(
        settings=settings,
        pool=pool,
        metrics=Metrics(),
        features=[source(Job("drain", SELDOM, None, drain, again_at_once=bool))],
    )
    await running(worker, until=lambda: not backlog)
    assert worker.rounds["seldom"] == 4


async def test_a_job_wakes_another_schedule_instead_of_it_waiting_its_interval(
    pool: Pool, settings: Settings
) -> None:
    """The alert evaluator wakes the notification dispatcher when it queued something."""
    ran: Counter[str] = Counter()

    def sources(context: WorkerContext) -> list[Job[Any]]:
        async def produce(conn: AsyncConnection[Row], now: datetime) -> int:
            # Wakes coalesce like any signal: wake again once the last one was answered.
            if ran["woke"] < 3 and ran["consume"] == ran["woke"] + 1:
                ran["woke"] += 1
                context.wake(SELDOM)
            return 1

        return [
            Job("produce", OFTEN, None, produce),
            Job("consume", SELDOM, None, counting(ran, "consume")),
        ]

    worker = Worker(settings=settings, pool=pool, metrics=Metrics(), features=[sources])
    await running(worker, until=lambda: ran["consume"] >= 4)
    # Its first round at start, then one per wake: not an hour apart.
    await asyncio.sleep(0.2)
    assert ran["consume"] == 4


async def test_a_job_another_worker_holds_is_counted_as_skipped(
    pool: Pool, settings: Settings
) -> None:
    metrics = Metrics()
    worker = Worker(settings=settings, pool=pool, metrics=metrics)
    async with pool.connection() as holder, holder.transaction():
        await holder.execute("SELECT pg_advisory_xact_lock(%s)", (int(JobLock.PARTITIONS),))
        assert await worker.run_job("partitions") is None
    sample = metrics.registry.get_sample_value
    assert sample("fieldline_worker_jobs_total", {"job": "partitions", "outcome": "skipped"}) == 1


def test_jobs_that_would_share_metrics_or_a_lock_are_refused(
    settings: Settings,
) -> None:
    async def nothing(conn: AsyncConnection[Row], now: datetime) -> None:
        return None

    def worker(*jobs: Job[Any]) -> Worker:
        return Worker(
            settings=settings,
            pool=None,  # type: ignore[arg-type]  # refused before any connection
            metrics=Metrics(),
            features=[source(*jobs)],
        )

    with pytest.raises(ValueError, match="share a name: twice"):
        worker(Job("twice", OFTEN, None, nothing), Job("twice", SELDOM, None, nothing))
    with pytest.raises(ValueError, match="share a lock"):
        worker(
            Job("one", OFTEN, JobLock.PARTITIONS, nothing),
            Job("other", SELDOM, JobLock.PARTITIONS, nothing),
        )

    # Every feature's jobs together, housekeeping's in the order they always ran.
    registered = Worker(settings=settings, pool=None, metrics=Metrics())  # type: ignore[arg-type]
    by_schedule = {
        schedule.name: [job.name for job in registered.jobs if job.schedule == schedule]
        for schedule in registered.schedules
    }
    assert by_schedule == {
        "housekeeping": [
            "partitions",
            "forget_message_ids",
            "silent_offline",
            "forget_rejected_messages",
            "forget_ingest_activity",
            "forget_provisioning_signatures",
            "config_delivery",
            "certificates",
        ],
        "retention": ["retention", "storage_accounting"],
        "command-dispatch": ["command_dispatch"],
        "alerts": ["alert_evaluate"],
        "notify": ["notify_dispatch"],
        "backup": ["backup", "backup_verify"],
        "rollouts": ["rollouts"],
        "health": ["health"],
    }
