"""Periodic housekeeping: partitions ahead, forgetting old message ids, silent devices.

Several workers may run (for availability); each job's advisory lock makes
the others skip it rather than do it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fieldline.broker.publisher import Publisher
from fieldline.config import Settings
from fieldline.ops.metrics import Metrics
from fieldline.storage import housekeeping
from fieldline.storage.db import Pool

log = logging.getLogger(__name__)

PARTITION_DAYS_AHEAD = 2


class Worker:
    def __init__(
        self,
        *,
        settings: Settings,
        pool: Pool,
        metrics: Metrics,
        publisher: Publisher | None = None,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._metrics = metrics
        self._publisher = publisher  # downlinks (commands, configuration), when there is a broker
        self.rounds = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Run every job now, then every `worker_interval_seconds`, until `stopping`."""
        while not stopping.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stopping.wait(), timeout=self._settings.worker_interval_seconds
                )

    async def run_once(self) -> None:
        now = datetime.now(UTC)
        settings = self._settings
        await self._job(
            "partitions",
            lambda conn: housekeeping.create_partitions_ahead(
                conn, now.date(), PARTITION_DAYS_AHEAD
            ),
        )
        forgotten = await self._job(
            "forget_message_ids",
            lambda conn: housekeeping.forget_message_ids(
                conn, now - timedelta(days=settings.dedup_window_days)
            ),
        )
        if forgotten:
            self._metrics.message_ids_forgotten.inc(forgotten)
            log.info("message ids forgotten", extra={"count": forgotten})
        silent = await self._job(
            "silent_offline",
            lambda conn: housekeeping.mark_silent_offline(
                conn, now - timedelta(seconds=settings.online_timeout_seconds), now
            ),
        )
        if silent:
            self._metrics.devices_timed_out.inc(len(silent))
            log.info(
                "silent devices marked offline",
                extra={"count": len(silent), "device_ids": silent[:20]},
            )
        self.rounds += 1

    async def _job(self, name: str, job: Callable[[Any], Awaitable[Any]]) -> Any:
        try:
            async with self._pool.connection() as conn:
                result = await job(conn)
        except Exception:
            # The next round tries again; a failed job must not stop the others.
            self._metrics.worker_jobs.labels(job=name, outcome="failed").inc()
            log.exception("worker job failed", extra={"job": name})
            return None
        outcome = "skipped" if result is None else "done"
        self._metrics.worker_jobs.labels(job=name, outcome=outcome).inc()
        return result
