"""The worker's downlink jobs: pending commands to devices back online, configuration catch-up."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from fieldline.downlink.commands import DispatchRound, dispatch_round
from fieldline.downlink.config import Delivery, catch_up
from fieldline.storage.db import Row
from fieldline.storage.locks import JobLock
from fieldline.worker.jobs import HOUSEKEEPING, Job, Schedule, WorkerContext

log = logging.getLogger(__name__)

# How soon a device that comes back online gets its pending commands.
COMMAND_DISPATCH_INTERVAL_SECONDS = 1.0
COMMAND_DISPATCH = Schedule("command-dispatch", lambda _: COMMAND_DISPATCH_INTERVAL_SECONDS)

Conn = AsyncConnection[Row]


def downlink_jobs(worker: WorkerContext) -> list[Job[Any]]:
    publisher = worker.publisher
    topics = worker.settings.topics
    online_timeout = timedelta(seconds=worker.settings.online_timeout_seconds)
    republished = False  # once per worker: the in-process broker forgets retained messages

    async def dispatch_commands(conn: Conn, now: datetime) -> DispatchRound | None:
        """Send pending commands to devices that are back online, expire overdue ones."""
        outcome = await dispatch_round(
            conn, publisher=publisher, topics=topics, online_since=now - online_timeout
        )
        if outcome is not None and (outcome.sent or outcome.expired):
            log.info(
                "commands dispatched", extra={"sent": outcome.sent, "expired": outcome.expired}
            )
        return outcome

    async def deliver_configurations(conn: Conn, now: datetime) -> Delivery:
        nonlocal republished
        ready = publisher is not None and publisher.connected
        delivery = await catch_up(conn, publisher, topics, everything=not republished)
        if ready and not delivery.failed:
            republished = True
        return delivery

    return [
        Job(
            "command_dispatch",
            COMMAND_DISPATCH,
            JobLock.COMMAND_DISPATCH,
            dispatch_commands,
            again_at_once=lambda outcome: outcome.more,  # a full round: more may be due now
        ),
        # Row locks on each configuration let several workers deliver side by side.
        Job("config_delivery", HOUSEKEEPING, None, deliver_configurations),
    ]
