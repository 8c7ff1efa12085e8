"""`fieldline api`'s stand-in for a missing worker, so that fieldline still watches itself.

The worker judges the health checks and delivers notifications. When no worker has
been heard from for the down time (`domain.health`), `fieldline api` runs those two
jobs itself, under the same locks, so that "the worker is down" still reaches the
channels; it stops as soon as a worker beats again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fieldline.config import Settings
from fieldline.domain.health import down_after
from fieldline.notify.dispatcher import notify_jobs
from fieldline.ops.metrics import Metrics
from fieldline.storage import health as health_store
from fieldline.storage.db import Pool
from fieldline.worker.health import health_jobs
from fieldline.worker.service import Worker

log = logging.getLogger(__name__)


async def stand_in_for_the_worker(
    settings: Settings, pool: Pool, metrics: Metrics, stopping: asyncio.Event
) -> None:
    """`fieldline api`'s: the worker's health and notification jobs while none runs."""
    standby = Worker(
        settings=settings, pool=pool, metrics=metrics, features=(health_jobs, notify_jobs)
    )
    silent_for = down_after(settings.heartbeat_seconds)
    standing_in = False
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=settings.heartbeat_seconds)
        if stopping.is_set():
            return
        try:
            async with pool.connection() as conn:
                worker_running = await health_store.worker_running(conn, silent_for)
        except Exception:
            log.exception("could not tell whether a worker runs")
            continue
        if not worker_running and not standing_in:
            log.warning("no worker is running: the API judges health and sends notifications")
        elif worker_running and standing_in:
            log.info("a worker runs again: the API stops standing in for it")
        standing_in = not worker_running
        if standing_in:
            await standby.run_job("health")
            await standby.run_job("notify_dispatch")
