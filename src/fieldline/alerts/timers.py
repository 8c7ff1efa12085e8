"""What happens with no reading: durations that run out, devices and metrics gone silent,
repeats and escalations of alerts nobody acknowledged. Run every round."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fieldline.alerts import lifecycle
from fieldline.alerts.body import Event
from fieldline.alerts.enqueue import Notifying, enqueue_all
from fieldline.alerts.evaluator import Tally
from fieldline.alerts.lifecycle import RuleChange
from fieldline.domain.alerts import Change, Threshold, Transition, advance
from fieldline.storage import alert_state as state_store
from fieldline.storage import alerts as alert_store
from fieldline.storage.alert_state import ActiveRule, StateKey, StoredState
from fieldline.storage.alerts import Conn, StoredAlert


async def run_timers(
    conn: Conn,
    rules: list[ActiveRule],
    now: datetime,
    online_timeout: float,
    tally: Tally,
    *,
    caught_up: bool = True,
    silence_at: datetime | None = None,
) -> None:
    """`caught_up`: the round took the whole inbox. Otherwise readings that may end a
    pending duration are still waiting, so durations are not run out this round.
    `silence_at`: the time durations are judged at (`domain.alerts.stream_clock`)."""
    by_id = {rule.id: rule for rule in rules}
    if caught_up:
        await _durations(conn, by_id, now, silence_at or now, tally)
    await _silences_of_devices(conn, by_id, now, online_timeout, tally)
    await _orphans(conn, by_id, now, tally)
    escalations = await alert_store.escalations_due(conn, now)
    repeats = await alert_store.repeats_due(conn, now)
    rule_of = await _rules_of(conn, by_id, escalations + repeats)
    tally.notified += await enqueue_all(
        conn,
        [Notifying(a, Event.ESCALATION, rule_of(a)) for a in escalations]
        + [Notifying(a, Event.REPEAT, rule_of(a)) for a in repeats],
        now,
    )


async def _rules_of(
    conn: Conn, enabled: dict[int, ActiveRule], alerts: list[StoredAlert]
) -> Callable[[StoredAlert], ActiveRule | None]:
    """The rule of each alert, enabled or not (None once deleted)."""
    rules = dict(enabled)
    for rule_id in sorted({a.rule_id for a in alerts if a.rule_id is not None} - set(rules)):
        if (rule := await state_store.rule_by_id(conn, rule_id)) is not None:
            rules[rule_id] = rule
    return lambda alert: None if alert.rule_id is None else rules.get(alert.rule_id)


async def _durations(
    conn: Conn, rules: dict[int, ActiveRule], now: datetime, at: datetime, tally: Tally
) -> None:
    """Pending and clearing states whose `for_seconds` / `clear_for_seconds` ran out by
    `at` while their device was silent (domain.alerts.SILENCE)."""
    changed: dict[StateKey, StoredState] = {}
    changes: list[RuleChange] = []
    for (rule_id, device_id), stored in (await state_store.timed_states(conn)).items():
        rule = rules.get(rule_id)
        if rule is None or not isinstance(rule.condition, Threshold):
            continue
        step = advance(stored.state, rule.condition, at)
        if step.change is not None:
            changed[rule_id, device_id] = StoredState(stored.revision, step.state)
            changes.append(RuleChange(rule, device_id, step.change))
    await state_store.save_states(conn, changed)
    tally.add(await lifecycle.apply_changes(conn, changes, now))


async def _silences_of_devices(
    conn: Conn, rules: dict[int, ActiveRule], now: datetime, online_timeout: float, tally: Tally
) -> None:
    """Offline and no_data rules: opened when due, resolved once the device or metric is back."""
    due = await state_store.offline_due(conn, now, online_timeout)
    due += await state_store.no_data_due(conn, now)
    changes = [
        RuleChange(rule, found.device_id, Change(Transition.OPEN, found.at, None))
        for found in due
        if (rule := rules.get(found.rule_id)) is not None
    ]
    tally.add(await lifecycle.apply_changes(conn, changes, now))
    back = await state_store.timer_alerts_back(conn, now, online_timeout)
    alerts = await alert_store.resolve_by_ids(
        conn, {b.alert_id: b.value for b in back}, reason=lifecycle.CLEARED, now=now
    )
    tally.resolved += len(alerts)
    rule_of = await _rules_of(conn, rules, alerts)
    tally.notified += await enqueue_all(
        conn, [Notifying(a, Event.RESOLVED, rule_of(a)) for a in alerts], now
    )


async def _orphans(conn: Conn, rules: dict[int, ActiveRule], now: datetime, tally: Tally) -> None:
    """Alerts whose rule or device is gone, disabled, or no longer covers the device."""
    alerts = await alert_store.resolve_orphans(conn, state_store.IN_SCOPE)
    tally.resolved += len(alerts)
    rule_of = await _rules_of(conn, rules, alerts)
    tally.notified += await enqueue_all(
        conn, [Notifying(a, Event.RESOLVED, rule_of(a)) for a in alerts], now
    )
