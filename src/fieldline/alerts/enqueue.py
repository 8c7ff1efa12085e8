"""Alert events into the outbox: one row per enabled channel, in the events' transaction.

Which channels: the rule's, plus its escalation channels once escalated (the
escalation event itself goes to those alone). A silenced alert's rows are kept as
`suppressed`, so GET /notifications shows what the silence held back.

A round's events go in together: the enabled channels, the silences, the devices'
metadata and their metrics' metadata (for the summary's names and units) are read once
for all of them and the rows written in one statement. One
event at a time cost the worker four statements per alert opened or resolved and
kept it from keeping up with 54 a second (`fieldline bench alerts`, docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from fieldline.alerts.body import Event, idempotency_key, webhook_body
from fieldline.domain.alerts import Lines, NoData, Threshold
from fieldline.storage import alerts as alert_store
from fieldline.storage import metric_metadata as meta_store
from fieldline.storage.alert_state import ActiveRule
from fieldline.storage.alerts import Conn, Outgoing, StoredAlert

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Notifying:
    """An event that just happened to `alert` (its `transitions` already counts it).
    `lines` are the device's threshold lines when the caller has them at hand; `rule`
    is None when the rule was deleted (nobody left to tell)."""

    alert: StoredAlert
    event: Event
    rule: ActiveRule | None
    lines: Lines | None = None


def channels_for(rule: ActiveRule, alert: StoredAlert, event: Event) -> list[int]:
    if event is Event.ESCALATION:
        return sorted(set(rule.escalate_channels))
    escalated = alert.escalated_at is not None
    return sorted(set(rule.channels) | (set(rule.escalate_channels) if escalated else set()))


async def enqueue_all(conn: Conn, events: Sequence[Notifying], now: datetime) -> int:
    """Outbox rows for `events`, their ids in the order given; answer how many."""
    wanted = [
        (item, rule, channels_for(rule, item.alert, item.event))
        for item in events
        if (rule := item.rule) is not None
    ]
    enabled = set(
        await alert_store.enabled_channels(conn, sorted({c for *_, cs in wanted for c in cs}))
    )
    told = [(item, rule, [c for c in cs if c in enabled]) for item, rule, cs in wanted]
    told = [(item, rule, cs) for item, rule, cs in told if cs]
    if not told:
        return 0
    unknown_lines = {
        item.alert.device_id
        for item, rule, _ in told
        if item.lines is None and isinstance(rule.condition, Threshold) and item.alert.device_id
    }
    metadata = await alert_store.devices_metadata(conn, sorted(unknown_lines))
    of_a_metric = {
        item.alert.device_id
        for item, rule, _ in told
        if isinstance(rule.condition, Threshold | NoData) and item.alert.device_id
    }
    about_metrics = await meta_store.of_devices(conn, sorted(of_a_metric))
    silenced = await alert_store.silence_reasons(conn, sorted({i.alert.id for i, *_ in told}), now)
    rows: list[Outgoing] = []
    for item, rule, channels in told:
        alert, lines = item.alert, item.lines
        if lines is None and isinstance(rule.condition, Threshold):
            lines = rule.condition.lines(metadata.get(alert.device_id or "", {}))
        meta = about_metrics.get(alert.device_id or "", {}).get(alert.metric or "")
        body = webhook_body(
            alert, item.event, condition=rule.condition, lines=lines, sent_at=now, meta=meta
        )
        json, key = orjson.dumps(body).decode(), idempotency_key(alert)
        muted = silenced.get(alert.id)
        rows.extend(Outgoing(alert.id, c, str(item.event), key, json, muted) for c in channels)
    inserted = await alert_store.insert_notifications(conn, rows)
    log.info(
        "alert notifications enqueued",
        extra={
            "events": len(told),
            "notifications": inserted,
            "suppressed": sum(row.silenced is not None for row in rows),
            "alert_ids": sorted({item.alert.id for item, *_ in told})[:20],
        },
    )
    return inserted


async def enqueue(
    conn: Conn,
    alert: StoredAlert,
    event: Event,
    rule: ActiveRule | None,
    now: datetime,
    *,
    lines: Lines | None = None,
) -> int:
    """Outbox rows for one event (see `enqueue_all`)."""
    return await enqueue_all(conn, [Notifying(alert, event, rule, lines)], now)
