"""Preview a draft rule over stored history: when it would have fired and cleared.

The readings stored in `telemetry` are replayed per device, in time order, through
the same pure functions the worker's evaluator applies to live readings
(`domain.alerts.apply_reading`, with `advance` running the timers up to each
reading, as the evaluator's rounds do between readings), with each device's own
metadata thresholds. The rule is taken as created at `start`: its first reading in
the range starts it.

Offline rules are not previewed: the history does not hold what they depend on.
They count from `last_seen`, which heartbeats move without storing anything, and
a device that comes back silently (telemetry or heartbeats, no status message)
leaves no status event, so neither the status events nor gaps in telemetry tell
when such a rule would have fired or cleared.

The work is bounded (devices and points); a preview that hit a bound says `truncated`.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection

from fieldline.domain.alerts import (
    Change,
    Condition,
    Lines,
    NoData,
    Offline,
    Phase,
    RuleError,
    Scope,
    SeriesState,
    Threshold,
    Transition,
    advance,
    apply_reading,
    start_state,
)
from fieldline.storage import alert_rules as rule_store
from fieldline.storage import telemetry as telemetry_store
from fieldline.storage.alert_rules import WatchedDevice
from fieldline.storage.db import Row

Conn = AsyncConnection[Row]

DEFAULT_RANGE = timedelta(hours=24)
MAX_RANGE = timedelta(days=31)
MAX_DEVICES = 200
# A week of one-minute readings from 100 devices is 1,008,000 points (measured: see the
# commit that set this); past this the preview stops and says `truncated`.
MAX_POINTS = 1_500_000

Point = tuple[datetime, float]


@dataclass(frozen=True, slots=True)
class Interval:
    """One alert the rule would have opened; `end` None: still firing at the range's end."""

    start: datetime
    end: datetime | None
    start_value: float | None
    end_value: float | None


@dataclass(frozen=True, slots=True)
class DeviceIntervals:
    device_id: str
    intervals: tuple[Interval, ...]


@dataclass(frozen=True, slots=True)
class Preview:
    start: datetime
    end: datetime
    points: int  # readings replayed
    truncated: bool  # a bound was hit: devices or readings past it are left out
    devices: tuple[DeviceIntervals, ...]


class _Intervals:
    def __init__(self) -> None:
        self.closed: list[Interval] = []
        self.open: Interval | None = None

    def record(self, change: Change) -> None:
        if change.transition is Transition.OPEN:
            self.open = Interval(change.time, None, change.value, None)
        elif self.open is not None:
            self.closed.append(
                Interval(self.open.start, change.time, self.open.start_value, change.value)
            )
            self.open = None

    def all(self) -> tuple[Interval, ...]:
        return (*self.closed, *(() if self.open is None else (self.open,)))


class ThresholdReplay:
    """A threshold rule on one device's readings, fed in time order, chunk by chunk."""

    def __init__(self, rule: Threshold, lines: Lines, start: datetime) -> None:
        self.rule, self.lines = rule, lines
        self.state: SeriesState = start_state(start)
        self.intervals = _Intervals()

    def feed(self, points: Iterable[Point]) -> None:
        rule, lines, state, record = self.rule, self.lines, self.state, self.intervals.record
        timed = (Phase.PENDING, Phase.CLEARING)
        for time, value in points:
            if state.phase in timed:  # advance changes nothing in the other phases
                step = advance(state, rule, time)
                if step.change is not None:
                    record(step.change)
                state = step.state
            step = apply_reading(state, rule, lines, time, value)
            if step.change is not None:
                record(step.change)
            state = step.state
        self.state = state

    def finish(self, horizon: datetime) -> tuple[Interval, ...]:
        """The timers run on to `horizon` (the range's end, or now) on the last value."""
        step = advance(self.state, self.rule, horizon)
        if step.change is not None:
            self.intervals.record(step.change)
        return self.intervals.all()


class NoDataReplay:
    """A no_data rule on one device's readings of its metric: every gap longer than
    `for_seconds` opens at `for_seconds` into it and closes at the reading that ends it."""

    def __init__(self, rule: NoData, last: datetime, start: datetime) -> None:
        self.hold = timedelta(seconds=rule.for_seconds)
        self.last = last  # the newest reading, or when counting began
        self.start = start
        self.intervals: list[Interval] = []

    def _gap(self, until: datetime) -> datetime | None:
        """When a gap from the last reading to `until` fired, if it did."""
        if until - self.last <= self.hold or until <= self.start:
            return None
        return max(self.last + self.hold, self.start)

    def feed(self, points: Iterable[Point]) -> None:
        for time, value in points:
            fired = self._gap(time)
            if fired is not None:
                self.intervals.append(Interval(fired, time, None, value))
            self.last = max(self.last, time)

    def finish(self, horizon: datetime) -> tuple[Interval, ...]:
        fired = self._gap(horizon)
        if fired is not None:
            self.intervals.append(Interval(fired, None, None, None))
        return tuple(self.intervals)


def preview_range(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The range asked for: the last 24 hours by default, at most 31 days (RuleError)."""
    end = end or (now if start is None else min(now, start + DEFAULT_RANGE))
    start = start or end - DEFAULT_RANGE
    if end <= start:
        raise RuleError("end: must be after start")
    if end - start > MAX_RANGE:
        raise RuleError(f"end: a preview covers at most {MAX_RANGE.days} days")
    return start, end


async def preview(
    conn: Conn,
    *,
    scope: Scope,
    condition: Condition,
    start: datetime,
    end: datetime,
    now: datetime,
    device_id: str | None = None,
) -> Preview:
    """Replay `condition` on the devices `scope` covers (only `device_id`, if given)."""
    if isinstance(condition, Offline):
        raise RuleError("condition.type: preview supports threshold and no_data")
    watched = await rule_store.devices_in_scope(
        conn, scope, device_id=device_id, limit=MAX_DEVICES + 1
    )
    truncated = len(watched) > MAX_DEVICES
    horizon = min(end, now)
    budget = MAX_POINTS
    devices: list[DeviceIntervals] = []
    for device in watched[:MAX_DEVICES]:
        if budget <= 0:
            truncated = True
            break
        replay = await _replay(conn, device, condition, start)
        if replay is None:  # its metadata gives this device no threshold
            devices.append(DeviceIntervals(device.device_id, ()))
            continue
        read, last = 0, horizon
        series = telemetry_store.stream_series(
            conn,
            device_id=device.device_id,
            metric=condition.metric,
            start=start,
            end=end,
            limit=budget,
        )
        async with aclosing(series) as chunks:
            async for chunk in chunks:
                replay.feed(chunk)
                read, last = read + len(chunk), chunk[-1][0]
        budget -= read
        if budget <= 0:  # its readings may go on past the bound: judged up to the last read
            truncated, horizon = True, min(horizon, last)
        devices.append(DeviceIntervals(device.device_id, replay.finish(horizon)))
    return Preview(start, end, MAX_POINTS - budget, truncated, tuple(devices))


async def _replay(
    conn: Conn, device: WatchedDevice, condition: Threshold | NoData, start: datetime
) -> ThresholdReplay | NoDataReplay | None:
    if isinstance(condition, Threshold):
        lines = condition.lines(device.metadata)
        return None if lines is None else ThresholdReplay(condition, lines, start)
    before = await telemetry_store.last_time_before(
        conn, device_id=device.device_id, metric=condition.metric, before=start
    )
    # Never received: missed from when counting could begin (the device's creation).
    return NoDataReplay(condition, before or max(start, device.created_at), start)
