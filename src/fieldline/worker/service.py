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
from fieldline.domain.topics import TopicScheme
from fieldline.downlink import commands as dispatch
from fieldline.downlink import config as config_delivery
from fieldline.ops.metrics import Metrics
from fieldline.security.provisioning import SIGNATURE_MEMORY
from fieldline.storage import housekeeping
from fieldline.storage.db import Pool

log = logging.getLogger(__name__)

PARTITION_DAYS_AHEAD = 2
INGEST_ACTIVITY_KEPT = timedelta(days=1)  # the dashboard shows at most the last hour
# How soon a device that comes back online gets its pending commands.
COMMAND_DISPATCH_INTERVAL_SECONDS = 1.0


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
        self._configs_republished = False
        self.rounds = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Run every job now, then every `worker_interval_seconds`, until `stopping`;
        command dispatch beside them, every COMMAND_DISPATCH_INTERVAL_SECONDS."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.dispatch_commands(stopping), name="command-dispatch")
            while not stopping.is_set():
                await self.run_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stopping.wait(), timeout=self._settings.worker_interval_seconds
                    )

    async def dispatch_commands(self, stopping: asyncio.Event) -> None:
        """Send pending commands to devices that are back online, expire overdue ones."""
        while not stopping.is_set():
            outcome = await self.dispatch_once()
            if outcome is not None and outcome.more:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=COMMAND_DISPATCH_INTERVAL_SECONDS)

    async def dispatch_once(self) -> dispatch.DispatchRound | None:
        settings = self._settings
        online_since = datetime.now(UTC) - timedelta(seconds=settings.online_timeout_seconds)
        outcome: dispatch.DispatchRound | None = await self._job(
            "command_dispatch",
            lambda conn: dispatch.dispatch_round(
                conn,
                publisher=self._publisher,
                topics=TopicScheme(settings.topic_prefix),
                online_since=online_since,
            ),
        )
        if outcome is not None and (outcome.sent or outcome.expired):
            log.info(
                "commands dispatched", extra={"sent": outcome.sent, "expired": outcome.expired}
            )
        return outcome

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
        rejected = await self._job(
            "forget_rejected_messages",
            lambda conn: housekeeping.forget_rejected_messages(
                conn, now - timedelta(days=settings.rejected_retention_days)
            ),
        )
        if rejected:
            log.info("old rejected messages deleted", extra={"count": rejected})
        await self._job(
            "forget_ingest_activity",
            lambda conn: housekeeping.forget_ingest_activity(conn, now - INGEST_ACTIVITY_KEPT),
        )
        await self._job(
            "forget_provisioning_signatures",
            lambda conn: housekeeping.forget_provisioning_signatures(conn, now - SIGNATURE_MEMORY),
        )
        await self._job("config_delivery", self._deliver_configurations)
        self.rounds += 1

    async def _deliver_configurations(self, conn: Any) -> config_delivery.Delivery:
        # Once per worker, everything: the in-process broker forgets retained messages on restart.
        ready = self._publisher is not None and self._publisher.connected
        delivery = await config_delivery.catch_up(
            conn,
            self._publisher,
            TopicScheme(self._settings.topic_prefix),
            everything=not self._configs_republished,
        )
        if ready and not delivery.failed:
            self._configs_republished = True
        return delivery

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
