"""A worker job: a name, a schedule, a lock and a typed function.

Each feature offers its jobs as a `JobSource` (see `service.FEATURES`); the worker
runs whatever is registered, so a feature adds a job without touching its loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from psycopg import AsyncConnection

from fieldline.storage.db import Row
from fieldline.storage.locks import JobLock

if TYPE_CHECKING:
    from fieldline.broker.publisher import Publisher
    from fieldline.config import Settings
    from fieldline.ops.metrics import Metrics

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Schedule:
    """How often a round of jobs runs: `seconds` after the previous round ended.

    The jobs on one schedule run one after the other in registration order;
    each schedule has a task of its own, so a slow round never delays another's.
    """

    name: str
    seconds: Callable[[Settings], float]


HOUSEKEEPING = Schedule("housekeeping", lambda settings: settings.worker_interval_seconds)


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What a feature's jobs are built with, once per worker."""

    settings: Settings
    metrics: Metrics
    publisher: Publisher | None  # downlinks, when the worker has a broker connection
    # Run a schedule's next round now rather than after its interval (work was just
    # committed for it, e.g. notifications for the dispatcher).
    wake: Callable[[Schedule], None] = lambda _schedule: None


@dataclass(frozen=True, slots=True)
class Job(Generic[R]):
    """One periodic job.

    `run` gets a connection of its own and the time its round started; it answers
    None when another worker holds `lock` (counted as skipped). `lock` is the
    advisory lock `run` takes, unique per job; None for a job whose row locks
    let several workers run it side by side. `again_at_once` asks for the next
    round without waiting (a round that did as much as it may at once).
    """

    name: str  # the `job` label of fieldline_worker_jobs_total
    schedule: Schedule
    lock: JobLock | None
    run: Callable[[AsyncConnection[Row], datetime], Awaitable[R | None]]
    again_at_once: Callable[[R], bool] | None = None


# A feature's jobs, built for one worker (a job may keep state across its rounds).
JobSource = Callable[[WorkerContext], Iterable[Job[Any]]]
