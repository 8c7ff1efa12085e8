"""Alert rules and the state machine that evaluates them (SPEC §6). Pure: no I/O.

A threshold rule watches one metric of each device in its scope. Per (rule, device)
it moves ok → pending (the condition holds, `for_seconds` not yet) → firing → clearing
(the clear condition holds, `clear_for_seconds` not yet) → ok. Clearing uses its own
line (`clear_value`, hysteresis), so a value hovering at the threshold does not flap.
Time is the readings' own time, so a buffer flushed late is judged as it happened;
`tick` advances the timers when no reading comes (a room that stays warm and a
device that reports every 15 minutes must still fire at 10).

The same functions run in the worker's evaluator and in the preview of a draft
rule over stored history, so the preview shows exactly what the rule will do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class ScopeKind(StrEnum):
    DEVICE = "device"
    GROUP = "group"
    DEVICE_TYPE = "device_type"
    FLEET = "fleet"


class Op(StrEnum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    EQ = "=="
    NE = "!="
    OUTSIDE = "outside"


class AlertState(StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Phase(StrEnum):
    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"
    CLEARING = "clearing"


MAX_SECONDS = 366 * 86_400  # durations, repeats and escalations: at most a year


class RuleError(ValueError):
    """A rule that cannot be evaluated; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Scope:
    kind: ScopeKind
    value: str = ""  # device id, group name or device type; "" for the fleet

    def covers(self, device_id: str, group: str | None, device_type: str) -> bool:
        match self.kind:
            case ScopeKind.FLEET:
                return True
            case ScopeKind.DEVICE:
                return device_id == self.value
            case ScopeKind.GROUP:
                return group == self.value
            case ScopeKind.DEVICE_TYPE:
                return device_type == self.value


@dataclass(frozen=True, slots=True)
class FromMetadata:
    """A per-device threshold: the device's metadata `key`, else `default`."""

    key: str
    default: float | None

    def resolve(self, metadata: Mapping[str, Any]) -> float | None:
        value = metadata.get(self.key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return self.default
        number = float(value)
        return number if math.isfinite(number) else self.default


Bound = float | FromMetadata
Band = tuple[float, float]  # outside: [low, high]


@dataclass(frozen=True, slots=True)
class Threshold:
    metric: str
    op: Op
    value: Bound | Band
    for_seconds: int = 0
    clear_value: Bound | Band | None = None  # None: the threshold itself
    clear_for_seconds: int = 0

    @property
    def per_device(self) -> bool:
        """Whether a line comes from the device's metadata."""
        return isinstance(self.value, FromMetadata) or isinstance(self.clear_value, FromMetadata)

    def lines(self, metadata: Mapping[str, Any]) -> Lines | None:
        """The lines for one device, or None when its metadata gives no threshold."""
        trip = _resolve(self.value, metadata)
        clear = trip if self.clear_value is None else _resolve(self.clear_value, metadata)
        if trip is None or clear is None:
            return None
        return Lines(self.op, trip, clear)


@dataclass(frozen=True, slots=True)
class Offline:
    for_seconds: int


@dataclass(frozen=True, slots=True)
class NoData:
    metric: str
    for_seconds: int


Condition = Threshold | Offline | NoData


@dataclass(frozen=True, slots=True)
class Lines:
    """A threshold as it applies to one device: where it trips and where it clears."""

    op: Op
    trip: float | Band
    clear: float | Band

    def tripped(self, value: float) -> bool:
        return _compare(self.op, value, self.trip)

    def cleared(self, value: float) -> bool:
        """The clear condition: back on the good side of the clear line.

        For `>` with a clear value of 7 that is `<= 7`; for `outside` a band, inside
        the clear band; for `==` and `!=`, simply no longer tripped at the clear value.
        """
        match self.op:
            case Op.GT:
                return value <= _number(self.clear)
            case Op.GE:
                return value < _number(self.clear)
            case Op.LT:
                return value >= _number(self.clear)
            case Op.LE:
                return value > _number(self.clear)
            case Op.EQ | Op.NE | Op.OUTSIDE:
                return not _compare(self.op, value, self.clear)


def _compare(op: Op, value: float, line: float | Band) -> bool:
    match op:
        case Op.GT:
            return value > _number(line)
        case Op.GE:
            return value >= _number(line)
        case Op.LT:
            return value < _number(line)
        case Op.LE:
            return value <= _number(line)
        case Op.EQ:
            return value == _number(line)
        case Op.NE:
            return value != _number(line)
        case Op.OUTSIDE:
            low, high = line if isinstance(line, tuple) else (line, line)
            return value < low or value > high


def _number(line: float | Band) -> float:
    return line[0] if isinstance(line, tuple) else line


def _resolve(bound: Bound | Band, metadata: Mapping[str, Any]) -> float | Band | None:
    if isinstance(bound, FromMetadata):
        return bound.resolve(metadata)
    return bound


# ---------------------------------------------------------------------------------------
# The state machine of one (threshold rule, device)


@dataclass(frozen=True, slots=True)
class SeriesState:
    phase: Phase
    since: datetime  # when the phase began, in reading time
    last_time: datetime  # the newest reading applied
    last_value: float | None


class Transition(StrEnum):
    OPEN = "open"  # an alert opens (firing)
    RESOLVE = "resolve"  # the open alert resolves


@dataclass(frozen=True, slots=True)
class Change:
    """A transition the evaluator must act on: open or resolve the alert."""

    transition: Transition
    time: datetime  # reading time (or timer time) at which it happened
    value: float | None


@dataclass(frozen=True, slots=True)
class Step:
    state: SeriesState
    change: Change | None = None


def start_state(time: datetime) -> SeriesState:
    return SeriesState(Phase.OK, time, time, None)


def apply_reading(
    state: SeriesState, rule: Threshold, lines: Lines, time: datetime, value: float
) -> Step:
    """One reading, in time order. A reading not newer than the last one applied is ignored
    (the caller counts it): the state already reflects a later moment."""
    if time <= state.last_time and state.last_value is not None:
        return Step(state)
    hold, clear_hold = (
        timedelta(seconds=rule.for_seconds),
        timedelta(seconds=rule.clear_for_seconds),
    )
    match state.phase:
        case Phase.OK:
            if not lines.tripped(value):
                return _heard(state, time, value)
            if hold:
                return Step(SeriesState(Phase.PENDING, time, time, value))
            return _open(time, time, value)
        case Phase.PENDING:
            if not lines.tripped(value):
                return Step(SeriesState(Phase.OK, time, time, value))
            if time - state.since >= hold:
                return _open(state.since + hold, time, value)
            return _heard(state, time, value)
        case Phase.FIRING:
            if not lines.cleared(value):
                return _heard(state, time, value)
            if clear_hold:
                return Step(SeriesState(Phase.CLEARING, time, time, value))
            return _resolve_at(time, time, value)
        case Phase.CLEARING:
            if not lines.cleared(value):
                return Step(SeriesState(Phase.FIRING, time, time, value))
            if time - state.since >= clear_hold:
                return _resolve_at(state.since + clear_hold, time, value)
            return _heard(state, time, value)


# A duration runs out without a reading only once the device has been silent this long:
# until then its next reading may still be on its way. The broker delivers each device's
# messages in order but not in order across devices: under load (`fieldline bench
# alerts`, Mosquitto at 100% of a core) one device's reading arrived 5 s after others'
# newer ones, so no fleet-wide clock says a device's next reading is not coming. A device
# that keeps reporting ends its duration with its own next reading (opened at the due
# time all the same); one that stopped reporting is judged this much after it did.
# Silence is counted on the stream's clock, not the wall clock, when the whole stream
# runs late (`stream_clock`): while ingest catches up on a backlog (after a restart, or
# behind a busy broker) every device looks silent by the wall clock, and each pending
# duration would open an alert that its delayed reading then resolves.
SILENCE = timedelta(seconds=10)
# How far the stream's clock may hold the timers back: a device whose clock is behind
# (no NTP) must not delay every other device's durations by more than this.
STREAM_HOLD = timedelta(seconds=60)


def stream_clock(now: datetime, newest: datetime | None) -> datetime:
    """The time the timers judge silence at: the newest reading just taken when the
    stream is behind the wall clock (readings waited in the broker), at most STREAM_HOLD
    behind `now`. With no reading taken, `now`: a fleet gone quiet is judged by the wall
    clock."""
    if newest is None or newest >= now:
        return now
    return max(newest, now - STREAM_HOLD)


def advance(state: SeriesState, rule: Threshold, now: datetime) -> Step:
    """The timers, with no new reading: the last value still stands until one comes.

    Only once the device has been silent for SILENCE; the state then stands at the due
    time, so a reading from before it that arrives afterwards is late, never a
    resolution before the opening."""
    if now - state.last_time < SILENCE:
        return Step(state)
    if state.phase is Phase.PENDING and now - state.since >= timedelta(seconds=rule.for_seconds):
        due = state.since + timedelta(seconds=rule.for_seconds)
        return Step(
            SeriesState(Phase.FIRING, due, max(due, state.last_time), state.last_value),
            Change(Transition.OPEN, due, state.last_value),
        )
    clear_hold = timedelta(seconds=rule.clear_for_seconds)
    if state.phase is Phase.CLEARING and now - state.since >= clear_hold:
        due = state.since + clear_hold
        return Step(
            SeriesState(Phase.OK, due, max(due, state.last_time), state.last_value),
            Change(Transition.RESOLVE, due, state.last_value),
        )
    return Step(state)


def _heard(state: SeriesState, time: datetime, value: float) -> Step:
    """The phase goes on; only the newest reading changes. Built directly rather than with
    `dataclasses.replace`, which costs half of a reading's evaluation (the preview replays
    a million readings; the evaluator sees every reading of a watched metric)."""
    return Step(SeriesState(state.phase, state.since, time, value))


def _open(at: datetime, time: datetime, value: float) -> Step:
    return Step(SeriesState(Phase.FIRING, at, time, value), Change(Transition.OPEN, at, value))


def _resolve_at(at: datetime, time: datetime, value: float) -> Step:
    return Step(SeriesState(Phase.OK, at, time, value), Change(Transition.RESOLVE, at, value))


# ---------------------------------------------------------------------------------------
# Reading a rule from the API's JSON (and from the database's copy of it)


def parse_scope(data: Mapping[str, Any]) -> Scope:
    """`{}` (the fleet), or exactly one of `device_id`, `group`, `device_type`."""
    keys = {"device_id": ScopeKind.DEVICE, "group": ScopeKind.GROUP}
    keys["device_type"] = ScopeKind.DEVICE_TYPE
    given = [k for k in data if data[k] not in (None, "")]
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise RuleError(f"scope: unknown field {unknown[0]!r} (device_id, group or device_type)")
    if not given:
        return Scope(ScopeKind.FLEET)
    if len(given) > 1:
        raise RuleError("scope: give one of device_id, group or device_type (or none: the fleet)")
    value = data[given[0]]
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise RuleError(f"scope.{given[0]}: a non-empty name of at most 256 characters")
    return Scope(keys[given[0]], value)


def scope_json(scope: Scope) -> dict[str, str]:
    match scope.kind:
        case ScopeKind.FLEET:
            return {}
        case ScopeKind.DEVICE:
            return {"device_id": scope.value}
        case ScopeKind.GROUP:
            return {"group": scope.value}
        case ScopeKind.DEVICE_TYPE:
            return {"device_type": scope.value}


def parse_condition(data: Mapping[str, Any]) -> Condition:
    """The condition as SPEC §6 writes it; RuleError names the first problem."""
    kind = data.get("type")
    allowed = {
        "threshold": {"type", "metric", "op", "value"}
        | {"for_seconds", "clear_value", "clear_for_seconds"},
        "offline": {"type", "for_seconds"},
        "no_data": {"type", "metric", "for_seconds"},
    }
    if kind not in allowed:
        raise RuleError("condition.type: one of threshold, offline, no_data")
    unknown = sorted(set(data) - allowed[kind])
    if unknown:
        raise RuleError(f"condition: unknown field {unknown[0]!r} for type {kind}")
    for_seconds = _seconds(data, "for_seconds")
    if kind == "offline":
        return Offline(for_seconds)
    metric = data.get("metric")
    if not isinstance(metric, str) or not 0 < len(metric) <= 64:
        raise RuleError("condition.metric: a metric name of 1 to 64 characters")
    if kind == "no_data":
        if for_seconds <= 0:
            raise RuleError("condition.for_seconds: no_data needs a duration above 0")
        return NoData(metric, for_seconds)
    try:
        op = Op(str(data.get("op")))
    except ValueError:
        raise RuleError("condition.op: one of " + ", ".join(o.value for o in Op)) from None
    if "value" not in data:
        raise RuleError("condition.value: required")
    value = _bound(op, data["value"], "value")
    clear = (
        None if data.get("clear_value") is None else _bound(op, data["clear_value"], "clear_value")
    )
    if (
        isinstance(value, tuple)
        and isinstance(clear, tuple)
        and not value[0] <= clear[0] <= clear[1] <= value[1]
    ):
        raise RuleError("condition.clear_value: a band inside the value's band")
    if isinstance(value, float) and isinstance(clear, float) and _wrong_side(op, value, clear):
        raise RuleError(
            "condition.clear_value: on the good side of the threshold (hysteresis), "
            f"e.g. below it for {op.value}"
        )
    return Threshold(metric, op, value, for_seconds, clear, _seconds(data, "clear_for_seconds"))


def condition_json(condition: Condition) -> dict[str, Any]:
    match condition:
        case Offline(for_seconds):
            return {"type": "offline", "for_seconds": for_seconds}
        case NoData(metric, for_seconds):
            return {"type": "no_data", "metric": metric, "for_seconds": for_seconds}
        case Threshold():
            return {
                "type": "threshold",
                "metric": condition.metric,
                "op": condition.op.value,
                "value": _bound_json(condition.value),
                "for_seconds": condition.for_seconds,
                "clear_value": (
                    None if condition.clear_value is None else _bound_json(condition.clear_value)
                ),
                "clear_for_seconds": condition.clear_for_seconds,
            }


def _wrong_side(op: Op, value: float, clear: float) -> bool:
    return (op in (Op.GT, Op.GE) and clear > value) or (op in (Op.LT, Op.LE) and clear < value)


def _seconds(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SECONDS:
        raise RuleError(f"condition.{key}: whole seconds from 0 to {MAX_SECONDS}")
    return value


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RuleError(f"condition.{where}: a finite number")
    return float(value)


def _bound(op: Op, value: Any, where: str) -> Bound | Band:
    if op is Op.OUTSIDE:
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise RuleError(f"condition.{where}: [low, high] for outside")
        low, high = _finite(value[0], where), _finite(value[1], where)
        if low > high:
            raise RuleError(f"condition.{where}: low must not be above high")
        return (low, high)
    if isinstance(value, Mapping):
        key, default = value.get("metadata"), value.get("default")
        if set(value) - {"metadata", "default"} or not isinstance(key, str) or not key:
            raise RuleError(f'condition.{where}: {{"metadata": key, "default": number}}')
        return FromMetadata(key, None if default is None else _finite(default, where))
    return _finite(value, where)


def _bound_json(bound: Bound | Band) -> Any:
    if isinstance(bound, FromMetadata):
        return {"metadata": bound.key, "default": bound.default}
    if isinstance(bound, tuple):
        return list(bound)
    return bound
