"""What happens with no reading: durations that run out, devices and metrics gone silent,
repeats and escalations of alerts nobody acknowledged. Run every round."""

from __future__ import annotations

from datetime import datetime

from fieldline.alerts import lifecycle
from fieldline.alerts.body import Event
from fieldline.alerts.enqueue import enqueue
from fieldline.alerts.evaluator import Tally, act
from fieldline.domain.alerts import Threshold, advance
from fieldline.storage import alert_state as state_store
from fieldline.storage import alerts as alert_store
from fieldline.storage.alert_state import ActiveRule, StateKey, StoredState
from fieldline.storage.alerts import Conn


async def run_timers(
    conn: Conn,
    rules: list[ActiveRule],
    now: datetime,
    online_timeout: float,
    tally: Tally,
    *,
    caught_up: bool = True,
) -> None:
    """`caught_up`: the round took the whole inbox. Otherwise readings that may end a
    pending duration are still waiting, so durations are not run out this round."""
    by_id = {rule.id: rule for rule in rules}
    if caught_up:
        await _durations(conn, by_id, now, tally)
    await _silences_of_devices(conn, by_id, now, online_timeout, tally)
    await _orphans(conn, now, tally)
    for alert in await alert_store.escalations_due(conn, now):
        rule = await state_store.rule_by_id(conn, alert.rule_id) if alert.rule_id else None
        await enqueue(conn, alert, Event.ESCALATION, rule, now)
    for alert in await alert_store.repeats_due(conn, now):
        rule = by_id.get(alert.rule_id) if alert.rule_id else None
        await enqueue(conn, alert, Event.REPEAT, rule, now)


async def _durations(conn: Conn, rules: dict[int, ActiveRule], now: datetime, tally: Tally) -> None:
    """Pending and clearing states whose `for_seconds` / `clear_for_seconds` ran out while
    their device was silent (domain.alerts.SILENCE)."""
    changed: dict[StateKey, StoredState] = {}
    for (rule_id, device_id), stored in (await state_store.timed_states(conn)).items():
        rule = rules.get(rule_id)
        if rule is None or not isinstance(rule.condition, Threshold):
            continue
        step = advance(stored.state, rule.condition, now)
        if step.change is not None:
            changed[rule_id, device_id] = StoredState(stored.revision, step.state)
            await act(conn, rule, device_id, step.change, now, tally)
    await state_store.save_states(conn, changed)


async def _silences_of_devices(
    conn: Conn, rules: dict[int, ActiveRule], now: datetime, online_timeout: float, tally: Tally
) -> None:
    """Offline and no_data rules: opened when due, resolved once the device or metric is back."""
    due = await state_store.offline_due(conn, now, online_timeout)
    for found in due + await state_store.no_data_due(conn, now):
        rule = rules.get(found.rule_id)
        if rule is not None:
            opened = await lifecycle.open_alert(
                conn, rule, found.device_id, at=found.at, value=None, now=now
            )
            tally.opened += opened is not None
    for back in await state_store.timer_alerts_back(conn, now, online_timeout):
        alert = await alert_store.resolve_by_id(
            conn, back.alert_id, value=back.value, reason=lifecycle.CLEARED, now=now
        )
        if alert is not None:
            tally.resolved += 1
            await enqueue(conn, alert, Event.RESOLVED, rules.get(back.rule_id), now)


async def _orphans(conn: Conn, now: datetime, tally: Tally) -> None:
    """Alerts whose rule or device is gone, disabled, or no longer covers the device."""
    for alert in await alert_store.resolve_orphans(conn, state_store.IN_SCOPE):
        tally.resolved += 1
        rule = await state_store.rule_by_id(conn, alert.rule_id) if alert.rule_id else None
        await enqueue(conn, alert, Event.RESOLVED, rule, now)
