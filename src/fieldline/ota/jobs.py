"""The worker's rollout job (ota/engine.py), about once a second."""

from __future__ import annotations

import logging
import random
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from fieldline.ota.engine import RoundOutcome, rollout_round
from fieldline.storage.db import Row
from fieldline.storage.locks import JobLock
from fieldline.worker.jobs import Job, Schedule, WorkerContext

log = logging.getLogger(__name__)

ROUND_SECONDS = 1.0
# Each round comes 0.8-1.2 s after the last: devices are told at the pace, not in step
# with every other worker clock. Not a secret: `random` is what jitter needs.
ROLLOUTS = Schedule("rollouts", lambda _: ROUND_SECONDS * random.uniform(0.8, 1.2))  # noqa: S311


def ota_jobs(worker: WorkerContext) -> list[Job[Any]]:
    settings = worker.settings
    publisher = worker.publisher
    topics = settings.topics
    # Absolute when the API's public address is known; else a path on the API's address.
    base_url = (settings.public_url or "").rstrip("/")

    async def advance(conn: AsyncConnection[Row], now: datetime) -> RoundOutcome | None:
        outcome = await rollout_round(
            conn, publisher=publisher, topics=topics, base_url=base_url, now=now
        )
        if outcome is not None and (
            outcome.notified or outcome.finished or outcome.paused or outcome.completed
        ):
            log.info(
                "rollout round",
                extra={
                    "notified": outcome.notified,
                    "finished": outcome.finished,
                    "paused": outcome.paused,
                    "completed": outcome.completed,
                },
            )
        return outcome

    return [Job("rollouts", ROLLOUTS, JobLock.ROLLOUTS, advance)]
