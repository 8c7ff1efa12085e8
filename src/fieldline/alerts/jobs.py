"""The worker's alert job: one round of evaluation, in one transaction, under one lock.

Readings, timers and the events they make share the round's transaction: the inbox
rows it consumed, the state it moved, the alerts it opened and their outbox rows
commit together or not at all, so a worker killed mid-round repeats nothing and
loses nothing (the next round takes the same readings again).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from fieldline.alerts.evaluator import Tally, apply_inbox, seed
from fieldline.alerts.timers import run_timers
from fieldline.domain.alerts import AlertState, Severity, stream_clock
from fieldline.notify.dispatcher import NOTIFY
from fieldline.storage import alert_state as state_store
from fieldline.storage import alerts as alert_store
from fieldline.storage.alerts import Conn
from fieldline.storage.locks import JobLock, try_job_lock
from fieldline.worker.jobs import Job, Schedule, WorkerContext

log = logging.getLogger(__name__)

ALERTS = Schedule("alerts", lambda settings: settings.alert_interval_seconds)
# Readings applied per transaction: a backlog is worked off in rounds that follow one
# another at once, none holding its locks long.
INBOX_CHUNK = 20_000


def alert_jobs(worker: WorkerContext) -> list[Job[Any]]:
    settings, metrics = worker.settings, worker.metrics
    seeded: set[tuple[int, int]] = set()  # (rule, revision) judged on latest values
    parsed: state_store.RuleCache = {}  # rules as of their last change

    async def evaluate(conn: Conn, now: datetime) -> Tally | None:
        tally = Tally()
        async with conn.transaction():
            if not await try_job_lock(conn, JobLock.ALERT_EVALUATE):
                return None
            rules = await state_store.enabled_rules(conn, parsed)
            readings = await state_store.take_inbox(conn, INBOX_CHUNK)
            tally.readings = len(readings)
            await apply_inbox(conn, rules, readings, now, tally)
            judged = await seed(conn, rules, seeded, now, tally)
            await run_timers(
                conn,
                rules,
                now,
                settings.online_timeout_seconds,
                tally,
                caught_up=tally.readings < INBOX_CHUNK,
                silence_at=stream_clock(now, max((r.time for r in readings), default=None)),
            )
            counts = await alert_store.active_counts(conn)
        seeded.update(judged)
        if tally.notified:
            worker.wake(NOTIFY)  # committed: the dispatcher need not wait for its interval
        metrics.alert_evaluations.inc(tally.evaluations)
        metrics.alert_readings_late.inc(tally.late)
        for severity in Severity:
            for state in (AlertState.FIRING, AlertState.ACKNOWLEDGED):
                value = counts.get((str(severity), str(state)), 0)
                metrics.alerts_active.labels(severity=str(severity), state=str(state)).set(value)
        if tally.opened or tally.resolved or tally.late:
            log.info(
                "alerts evaluated",
                extra={
                    "readings": tally.readings,
                    "opened": tally.opened,
                    "resolved": tally.resolved,
                    "late": tally.late,
                },
            )
        return tally

    return [
        Job(
            "alert_evaluate",
            ALERTS,
            JobLock.ALERT_EVALUATE,
            evaluate,
            again_at_once=lambda tally: tally.readings >= INBOX_CHUNK,
        )
    ]
