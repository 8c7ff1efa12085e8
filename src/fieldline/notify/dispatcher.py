"""The worker's notification dispatcher: the outbox delivered in order, per channel.

Each round takes a session advisory lock (one worker dispatches at a time, and no
transaction is open while it waits on a receiver), then drains every channel whose
oldest pending notification is due, the channels side by side. A channel's rows go
strictly in id order: only its head is tried, and a failing head holds that channel
alone ("a down webhook gets every notification afterwards, in order").

Each attempt is sent with no transaction open, then recorded in one short transaction:
the attempt, the row's new status, the channel's failing state and, when it starts or
stops failing, its channel alert and the notifications of that alert. A worker that
dies between a send and its record sends that row again on its next round, with the
same idempotency key: delivery is at least once, and receivers drop repeats by key.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from psycopg import AsyncConnection

from fieldline.config import Settings
from fieldline.notify import failing
from fieldline.notify.base import Channel, Delivery, Notice, failed
from fieldline.notify.channels import build_channel
from fieldline.notify.http import http_client
from fieldline.ops.metrics import Metrics
from fieldline.storage import notifications as outbox
from fieldline.storage.db import Row
from fieldline.storage.locks import JobLock, session_job_lock
from fieldline.storage.notification_channels import NotificationChannel
from fieldline.worker.jobs import Job, Schedule, WorkerContext

log = logging.getLogger(__name__)

Conn = AsyncConnection[Row]

NOTIFY = Schedule("notify", lambda settings: settings.notify_interval_seconds)
# A channel delivers at most this many in one round, so that one busy channel's backlog
# does not keep the round (and the pending gauge) waiting; the next round follows at once.
MAX_PER_CHANNEL_ROUND = 100


def retry_delay(
    attempts: int, *, start: float, cap: float, retry_after: float | None, rng: random.Random
) -> float:
    """Seconds before the next try after `attempts` failed ones: "full jitter", uniform in
    [0, min(cap, start * 2^(attempts-1))], so that retries of many channels spread out;
    never sooner than the receiver's Retry-After."""
    ceiling = min(cap, start * 2.0 ** min(attempts - 1, 60))
    delay = rng.uniform(0.0, ceiling)
    return max(delay, retry_after or 0.0)


@dataclass(frozen=True, slots=True)
class DispatchRound:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    more: bool = False  # some channel has more due than one round delivers


def _drained(counts: Counter[str], *, more: bool = False) -> DispatchRound:
    return DispatchRound(counts["delivered"], counts["retried"], counts["failed"], more)


class Dispatcher:
    def __init__(self, settings: Settings, metrics: Metrics, rng: random.Random | None = None):
        self._settings = settings
        self._metrics = metrics
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)

    async def round(self, conn: Conn, _now: datetime) -> DispatchRound | None:
        """Deliver what is due; None when another worker is dispatching."""
        async with session_job_lock(conn, JobLock.NOTIFY_DISPATCH) as got:
            if not got:
                return None
            channels = await outbox.due_channels(conn)
            database = asyncio.Lock()  # the channels' tasks share the one connection
            # A task group: if recording fails (the database went away), the other
            # channels' tasks stop too before the connection goes back to the pool.
            async with http_client() as client, asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._drain(conn, database, channel, client))
                    for channel in channels
                ]
            drained = [task.result() for task in tasks]
            self._metrics.notifications_pending.set(await outbox.pending_count(conn))
        outcome = DispatchRound(
            delivered=sum(d.delivered for d in drained),
            retried=sum(d.retried for d in drained),
            failed=sum(d.failed for d in drained),
            more=any(d.more for d in drained),
        )
        if outcome.delivered or outcome.retried or outcome.failed:
            log.info(
                "notifications dispatched",
                extra={
                    "delivered": outcome.delivered,
                    "retried": outcome.retried,
                    "failed": outcome.failed,
                },
            )
        return outcome

    async def _drain(
        self,
        conn: Conn,
        database: asyncio.Lock,
        channel: NotificationChannel,
        client: httpx.AsyncClient,
    ) -> DispatchRound:
        """Send the channel's due rows in order until one fails or none is due (read in
        one query: a query per row was a fifth of the dispatcher's statements)."""
        try:
            sender: Channel | None = build_channel(channel.type, channel.config, client)
            unusable = None
        except ValueError as exc:  # a config stored before a stricter check, or edited by hand
            sender, unusable = None, f"the channel's stored config is unusable: {exc}"
        counts: Counter[str] = Counter()
        async with database:
            heads = await outbox.due_heads(conn, channel.id, MAX_PER_CHANNEL_ROUND)
        # Whether a delivery must clear the channel's failure (read with the channel).
        troubled = channel.failing_since is not None or channel.last_error is not None
        for head in heads:
            notice = Notice(head.body, head.event, head.idempotency_key)
            started = time.perf_counter()
            delivery = await self._send(sender, notice) if sender else failed(unusable or "")
            duration_ms = (time.perf_counter() - started) * 1000
            async with database, conn.transaction():
                status = await self._record(channel, head, delivery, duration_ms, conn, troubled)
            troubled = False  # cleared by that delivery; a failure ends the channel's turn
            if status is None:  # recorded meanwhile by someone else: read the channel anew
                return _drained(counts, more=True)
            outcome = "retried" if status == "pending" else status
            counts[outcome] += 1
            self._metrics.notifications.labels(outcome=outcome).inc()
            if not delivery.ok:
                return _drained(counts)
        return _drained(counts, more=len(heads) == MAX_PER_CHANNEL_ROUND)

    async def _send(self, sender: Channel, notice: Notice) -> Delivery:
        try:
            return await sender.send(notice)
        except Exception as exc:  # a channel's bug must not stop the other channels
            log.exception("notification channel raised", extra={"event": notice.event})
            return failed(f"{type(exc).__name__}: {exc}")

    async def _record(
        self,
        channel: NotificationChannel,
        head: outbox.Head,
        delivery: Delivery,
        duration_ms: float,
        conn: Conn,
        troubled: bool,
    ) -> str | None:
        settings = self._settings
        attempts = head.attempts + 1
        status = await outbox.record_attempt(
            conn,
            head,
            ok=delivery.ok,
            status_code=delivery.status_code,
            error=delivery.error,
            duration_ms=duration_ms,
            retry_in=retry_delay(
                attempts,
                start=settings.notify_retry_start_seconds,
                cap=settings.notify_retry_cap_seconds,
                retry_after=delivery.retry_after,
                rng=self._rng,
            ),
            give_up_after=settings.notify_give_up_seconds,
        )
        if status is None:
            return None
        if delivery.ok:
            if troubled and await outbox.channel_recovered(conn, channel.id):
                await failing.channel_back(conn, channel.id, channel.name, "channel delivers")
            return status
        error = delivery.error or "failed"
        declared = attempts >= settings.notify_failing_after_attempts
        await outbox.channel_failed(conn, channel.id, error, failing=declared)
        if declared:
            await failing.channel_failing(conn, channel.id, channel.name, error)
        if status == "failed":
            log.warning(
                "notification given up",
                extra={"notification_id": head.id, "channel": channel.name, "error": error},
            )
        return status


def notify_jobs(worker: WorkerContext) -> list[Job[Any]]:
    dispatcher = Dispatcher(worker.settings, worker.metrics)
    return [
        Job(
            "notify_dispatch",
            NOTIFY,
            JobLock.NOTIFY_DISPATCH,
            dispatcher.round,
            again_at_once=lambda outcome: outcome.more or outcome.delivered > 0,
        )
    ]
