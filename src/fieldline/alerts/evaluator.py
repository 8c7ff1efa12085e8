"""Threshold rules applied to the readings ingest put in the inbox, in reading-time order.

Each (rule, device in scope) runs `domain.alerts.apply_reading` over its readings;
the state survives in `alert_state`, so a duration does not start over when the
worker restarts. A reading older than the newest one applied is late (counted, not
applied: the state already reflects a later moment). A rule with no state for a
device is first judged on the device's latest value (`telemetry_latest`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from fieldline.alerts import lifecycle
from fieldline.alerts.lifecycle import Applied, RuleChange
from fieldline.domain.alerts import (
    Phase,
    ScopeKind,
    SeriesState,
    Threshold,
    apply_reading,
    start_state,
)
from fieldline.storage import alert_state as state_store
from fieldline.storage.alert_state import (
    ActiveRule,
    DeviceFacts,
    InboxReading,
    StateKey,
    StoredState,
)
from fieldline.storage.alerts import Conn


@dataclass(slots=True)
class Tally:
    """What a round did (the job's answer, and the metrics')."""

    readings: int = 0  # taken from the inbox
    evaluations: int = 0  # readings applied to a (rule, device)
    late: int = 0
    opened: int = 0
    resolved: int = 0
    notified: int = 0  # outbox rows written

    def add(self, applied: Applied) -> None:
        self.opened += applied.opened
        self.resolved += applied.resolved
        self.notified += applied.notified


class RulesByScope:
    """A metric's threshold rules, found by what they cover: a device meets only its own.

    With 1,000 rules each on one group, matching every device against every rule cost
    10 million scope checks a round (`fieldline bench alerts`); this costs four lookups.
    """

    def __init__(self, rules: list[ActiveRule]) -> None:
        self._by: dict[tuple[ScopeKind, str, str], list[tuple[ActiveRule, Threshold]]] = (
            defaultdict(list)
        )
        self.metrics: set[str] = set()
        self.per_device = False  # some rule's threshold comes from device metadata
        for rule in rules:
            if isinstance(rule.condition, Threshold):
                metric = rule.condition.metric
                self._by[rule.scope.kind, rule.scope.value, metric].append((rule, rule.condition))
                self.metrics.add(metric)
                self.per_device |= rule.condition.per_device

    def covering(self, facts: DeviceFacts, metric: str) -> list[tuple[ActiveRule, Threshold]]:
        by = self._by
        return [
            *by.get((ScopeKind.FLEET, "", metric), ()),
            *by.get((ScopeKind.DEVICE, facts.device_id, metric), ()),
            *(by.get((ScopeKind.GROUP, facts.group, metric), ()) if facts.group else ()),
            *by.get((ScopeKind.DEVICE_TYPE, facts.device_type, metric), ()),
        ]


async def apply_inbox(
    conn: Conn, rules: list[ActiveRule], readings: list[InboxReading], now: datetime, tally: Tally
) -> None:
    watching = RulesByScope(rules)
    series: dict[tuple[str, str], list[InboxReading]] = defaultdict(list)
    for reading in readings:
        if reading.metric in watching.metrics:  # else no enabled rule watches it any more
            series[reading.device_id, reading.metric].append(reading)
    if not series:
        return
    device_ids = sorted({device for device, _ in series})
    devices = await state_store.device_facts(conn, device_ids, metadata=watching.per_device)
    states = await state_store.load_states(conn, sorted({r.id for r in rules}), device_ids)
    changed: dict[StateKey, StoredState] = {}
    changes: list[RuleChange] = []
    for (device_id, metric), items in sorted(series.items()):
        facts = devices.get(device_id)
        if facts is None:  # deleted since: its state went with it
            continue
        items.sort(key=lambda r: r.time)
        for rule, condition in watching.covering(facts, metric):
            lines = condition.lines(facts.metadata)
            if lines is None:  # no threshold for this device (metadata, no default)
                continue
            key = (rule.id, device_id)
            stored = states.get(key)
            before = stored.state if stored and stored.revision == rule.revision else None
            state = before or start_state(items[0].time)
            for item in items:
                if state.last_value is not None and item.time < state.last_time:
                    tally.late += 1
                    continue
                step = apply_reading(state, condition, lines, item.time, item.value)
                tally.evaluations += 1
                state = step.state
                if step.change is not None:
                    changes.append(RuleChange(rule, device_id, step.change, lines))
            if worth_saving(before, state):
                changed[key] = StoredState(rule.revision, state)
    await state_store.save_states(conn, changed)
    tally.add(await lifecycle.apply_changes(conn, changes, now))


# A state that only moved on in time (ok or firing, same phase since the same moment) is
# written at most this often: at 20,000 readings/s writing every (rule, device) each round
# cost PostgreSQL more than storing the readings (`fieldline bench alerts`). What is lost
# to a restart is at most this much of `last_time`, which only tells late readings apart.
STATE_REFRESH = timedelta(seconds=10)


def worth_saving(before: SeriesState | None, state: SeriesState) -> bool:
    """Whether a (rule, device)'s new state must be written now."""
    if before is None or state.phase != before.phase or state.since != before.since:
        return True
    if state.phase in (Phase.PENDING, Phase.CLEARING):  # the timers read its last value
        return state != before
    return state.last_time - before.last_time >= STATE_REFRESH


async def seed(
    conn: Conn, rules: list[ActiveRule], seeded: set[tuple[int, int]], now: datetime, tally: Tally
) -> list[tuple[int, int]]:
    """Judge each threshold rule not yet seeded by this worker (new, changed, or the
    worker just started) on the latest values of devices it has no state for; answer
    the (rule, revision) seeded, for the caller to remember once committed."""
    fresh = [
        rule
        for rule in rules
        if isinstance(rule.condition, Threshold) and (rule.id, rule.revision) not in seeded
    ]
    if not fresh:
        return []
    by_id = {rule.id: rule for rule in fresh}
    changed: dict[StateKey, StoredState] = {}
    changes: list[RuleChange] = []
    for found in await state_store.unseeded(conn, fresh):
        rule = by_id[found.rule_id]
        assert isinstance(rule.condition, Threshold)
        lines = rule.condition.lines(found.device.metadata)
        if lines is None:
            continue
        step = apply_reading(
            start_state(found.time), rule.condition, lines, found.time, found.value
        )
        tally.evaluations += 1
        device_id = found.device.device_id
        changed[rule.id, device_id] = StoredState(rule.revision, step.state)
        if step.change is not None:
            changes.append(RuleChange(rule, device_id, step.change, lines))
    await state_store.save_states(conn, changed)
    tally.add(await lifecycle.apply_changes(conn, changes, now))
    return [(rule.id, rule.revision) for rule in fresh]
