"""An alert's life: opened by its rule, resolved by its rule (or the rule's change),
each event notified in the same transaction that makes it."""

from __future__ import annotations

from datetime import UTC, datetime

from fieldline.alerts.body import Event
from fieldline.alerts.enqueue import enqueue
from fieldline.domain.alerts import Lines, NoData, Threshold
from fieldline.storage import alert_state as state_store
from fieldline.storage import alerts as alert_store
from fieldline.storage.alert_state import ActiveRule
from fieldline.storage.alerts import Conn, Opening, StoredAlert

CLEARED = "cleared"


async def open_alert(
    conn: Conn,
    rule: ActiveRule,
    device_id: str,
    *,
    at: datetime,
    value: float | None,
    now: datetime,
    lines: Lines | None = None,
) -> StoredAlert | None:
    """Open the (rule, device)'s alert and notify `firing`; None when one is open already."""
    metric = rule.condition.metric if isinstance(rule.condition, Threshold | NoData) else None
    opening = Opening(rule.id, rule.name, str(rule.severity), device_id, metric, at, value)
    alert = await alert_store.open_alert(conn, opening, now)
    if alert is not None:
        await enqueue(conn, alert, Event.FIRING, rule, now, lines=lines)
    return alert


async def resolve_alert(
    conn: Conn,
    rule: ActiveRule,
    device_id: str,
    *,
    at: datetime,
    value: float | None,
    now: datetime,
    lines: Lines | None = None,
) -> StoredAlert | None:
    """Resolve the (rule, device)'s open alert (its condition cleared) and notify."""
    alert = await alert_store.resolve_open(
        conn, rule_id=rule.id, device_id=device_id, at=at, value=value, reason=CLEARED, now=now
    )
    if alert is not None:
        await enqueue(conn, alert, Event.RESOLVED, rule, now, lines=lines)
    return alert


async def resolve_rule_alerts(conn: Conn, rule_id: int, reason: str) -> int:
    """Resolve every open alert of a rule and forget its per-device state; answer how many.

    For the rules API, in the transaction that changes ('rule changed'), disables
    ('rule disabled') or deletes ('rule deleted') the rule: call it BEFORE deleting
    the row, so the resolutions still reach the rule's channels. Disabled channels
    and silences apply as to any event.
    """
    rule = await state_store.rule_by_id(conn, rule_id)
    now = datetime.now(UTC)
    resolved = await alert_store.resolve_rule(conn, rule_id, reason)
    for alert in resolved:
        await enqueue(conn, alert, Event.RESOLVED, rule, now)
    await state_store.delete_rule_states(conn, rule_id)
    return len(resolved)
