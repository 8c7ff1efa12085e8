"""An alert's life: opened by its rule, resolved by its rule (or the rule's change),
each event notified in the same transaction that makes it.

A round's changes are applied together: one statement opens all the alerts it opens
and one resolves all it resolves, then `enqueue_all` writes every event's outbox rows.
A (rule, device) that changes more than once in a round (opens, resolves, opens
again) has its changes applied in waves, its k-th change in the k-th, so each alert's
events keep their order and their outbox ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fieldline.alerts.body import Event
from fieldline.alerts.enqueue import Notifying, enqueue_all
from fieldline.domain.alerts import Change, Lines, NoData, Threshold, Transition
from fieldline.storage import alert_state as state_store
from fieldline.storage import alerts as alert_store
from fieldline.storage.alert_state import ActiveRule, StateKey
from fieldline.storage.alerts import Clearing, Conn, Opening

CLEARED = "cleared"


@dataclass(frozen=True, slots=True)
class RuleChange:
    """What the state machine said about one (rule, device): open or resolve its alert."""

    rule: ActiveRule
    device_id: str
    change: Change
    lines: Lines | None = None  # the device's threshold lines, for the notification


@dataclass(frozen=True, slots=True)
class Applied:
    opened: int = 0
    resolved: int = 0
    notified: int = 0  # outbox rows written


def opening(rule: ActiveRule, device_id: str, at: datetime, value: float | None) -> Opening:
    metric = rule.condition.metric if isinstance(rule.condition, Threshold | NoData) else None
    return Opening(rule.id, rule.name, str(rule.severity), device_id, metric, at, value)


async def apply_changes(conn: Conn, changes: Sequence[RuleChange], now: datetime) -> Applied:
    """Open and resolve alerts as `changes` say, in each (rule, device)'s order, and
    notify each event. An open for a (rule, device) with an alert open already, and a
    resolve for one with none, do nothing."""
    waves: list[list[RuleChange]] = []
    seen: Counter[StateKey] = Counter()
    for item in changes:
        key = (item.rule.id, item.device_id)
        if seen[key] == len(waves):
            waves.append([])
        waves[seen[key]].append(item)
        seen[key] += 1
    events: list[Notifying] = []
    opened = resolved = 0
    for wave in waves:
        by_key = {(item.rule.id, item.device_id): item for item in wave}
        opens = [i for i in wave if i.change.transition is Transition.OPEN]
        clears = [i for i in wave if i.change.transition is Transition.RESOLVE]
        new = await alert_store.open_alerts(
            conn, [opening(i.rule, i.device_id, i.change.time, i.change.value) for i in opens], now
        )
        gone = await alert_store.resolve_open(
            conn,
            [Clearing(i.rule.id, i.device_id, i.change.time, i.change.value) for i in clears],
            reason=CLEARED,
            now=now,
        )
        for alerts, event in ((new, Event.FIRING), (gone, Event.RESOLVED)):
            for alert in alerts:
                item = by_key[alert.rule_id or 0, alert.device_id or ""]
                events.append(Notifying(alert, event, item.rule, item.lines))
        opened += len(new)
        resolved += len(gone)
    return Applied(opened, resolved, await enqueue_all(conn, events, now))


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
    await enqueue_all(conn, [Notifying(alert, Event.RESOLVED, rule) for alert in resolved], now)
    await state_store.delete_rule_states(conn, rule_id)
    return len(resolved)
