"""An alert's event into the outbox: one row per enabled channel, in the event's transaction.

Which channels: the rule's, plus its escalation channels once escalated (the
escalation event itself goes to those alone). A silenced alert's rows are kept as
`suppressed`, so GET /notifications shows what the silence held back.
"""

from __future__ import annotations

import logging
from datetime import datetime

from fieldline.alerts.body import Event, idempotency_key, webhook_body
from fieldline.domain.alerts import Lines, Threshold
from fieldline.storage import alerts as alert_store
from fieldline.storage.alert_state import ActiveRule
from fieldline.storage.alerts import Conn, StoredAlert

log = logging.getLogger(__name__)


def channels_for(rule: ActiveRule, alert: StoredAlert, event: Event) -> list[int]:
    if event is Event.ESCALATION:
        return sorted(set(rule.escalate_channels))
    escalated = alert.escalated_at is not None
    return sorted(set(rule.channels) | (set(rule.escalate_channels) if escalated else set()))


async def enqueue(
    conn: Conn,
    alert: StoredAlert,
    event: Event,
    rule: ActiveRule | None,
    now: datetime,
    *,
    lines: Lines | None = None,
) -> int:
    """Outbox rows for `alert`'s event (its `transitions` already counts it); answer how
    many. `lines` are the device's threshold lines when the caller has them at hand."""
    if rule is None:  # deleted: nobody left to tell
        return 0
    channels = await alert_store.enabled_channels(conn, channels_for(rule, alert, event))
    if not channels:
        return 0
    if lines is None and isinstance(rule.condition, Threshold):
        lines = rule.condition.lines(await alert_store.device_metadata(conn, alert.device_id))
    silenced = await alert_store.silence_reason(conn, alert.id, now)
    body = webhook_body(alert, event, condition=rule.condition, lines=lines, sent_at=now)
    inserted = await alert_store.insert_notifications(
        conn,
        alert_id=alert.id,
        channel_ids=channels,
        event=str(event),
        key=idempotency_key(alert),
        body=body,
        silenced=silenced,
    )
    log.info(
        "alert notification enqueued",
        extra={
            "alert_id": alert.id,
            "event": str(event),
            "channels": len(channels),
            "suppressed": silenced is not None,
        },
    )
    return inserted
