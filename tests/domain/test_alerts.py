"""The threshold state machine the worker and the preview share (domain.alerts), alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fieldline.domain.alerts import (
    SILENCE,
    STREAM_HOLD,
    Phase,
    RuleError,
    SeriesState,
    Threshold,
    Transition,
    advance,
    apply_reading,
    parse_condition,
    start_state,
    stream_clock,
)

T0 = datetime(2026, 12, 7, 10, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rule(**fields: object) -> Threshold:
    condition = parse_condition(
        {"type": "threshold", "metric": "t", "op": ">", "value": 8} | fields
    )
    assert isinstance(condition, Threshold)
    return condition


def run(
    condition: Threshold, readings: list[tuple[float, float]]
) -> tuple[SeriesState, list[tuple[Transition, datetime]]]:
    lines = condition.lines({})
    assert lines is not None
    state = start_state(at(readings[0][0]))
    changes = []
    for second, value in readings:
        step = apply_reading(state, condition, lines, at(second), value)
        state = step.state
        if step.change:
            changes.append((step.change.transition, step.change.time))
    return state, changes


def test_a_duration_opens_when_it_has_held_and_a_dip_starts_it_over() -> None:
    warm = rule(for_seconds=60)
    _, changes = run(warm, [(0, 9), (30, 9), (50, 7), (60, 9), (110, 9), (120, 9.5)])
    assert changes == [(Transition.OPEN, at(120))]  # held from 60, not from 0


def test_hysteresis_keeps_a_hovering_value_firing_until_the_clear_line() -> None:
    warm = rule(clear_value=7, clear_for_seconds=20)
    state, changes = run(warm, [(0, 9), (10, 7.5), (20, 8.5), (30, 6.9), (40, 7.2), (50, 6.5)])
    assert changes == [(Transition.OPEN, at(0))]
    assert state.phase is Phase.CLEARING  # since 50: 6.9 at 30 was undone by 7.2 at 40
    state, changes = run(warm, [(0, 9), (30, 6.9), (50, 6.0)])
    assert changes == [(Transition.OPEN, at(0)), (Transition.RESOLVE, at(50))]


def test_the_timer_runs_a_duration_out_only_after_the_device_fell_silent() -> None:
    warm = rule(for_seconds=60)
    state, _ = run(warm, [(0, 9), (55, 9)])
    # Due at 60, but a reading taken at 56 may still be on its way.
    assert advance(state, warm, at(61)).change is None
    step = advance(state, warm, at(55) + SILENCE)
    assert step.change is not None
    assert (step.change.transition, step.change.time) == (Transition.OPEN, at(60))
    # A reading from before the due time that turns up now is late: no resolution before
    # the opening.
    lines = warm.lines({})
    assert lines is not None
    assert apply_reading(step.state, warm, lines, at(58), 5.0).change is None


def test_silence_is_judged_on_the_streams_clock_when_the_stream_runs_late() -> None:
    now = at(100)
    assert stream_clock(now, None) == now  # nothing taken: the wall clock
    assert stream_clock(now, at(70)) == at(70)  # readings waited 30 s in the broker
    assert stream_clock(now, at(101)) == now  # a device whose clock runs ahead
    assert stream_clock(now, at(0)) == now - STREAM_HOLD  # one far behind holds back 60 s


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (
            {"type": "threshold", "metric": "t", "op": ">", "value": 8, "clear_value": 9},
            "good side",
        ),
        ({"type": "threshold", "metric": "t", "op": "outside", "value": 8}, "[low, high]"),
        ({"type": "threshold", "metric": "t", "op": ">", "value": float("nan")}, "finite"),
        ({"type": "no_data", "metric": "t", "for_seconds": 0}, "above 0"),
        ({"type": "offline", "for_seconds": -1}, "whole seconds"),
        ({"type": "sometimes"}, "one of threshold"),
    ],
)
def test_conditions_that_cannot_be_evaluated_are_refused_with_the_reason(
    condition: dict[str, object], message: str
) -> None:
    with pytest.raises(RuleError, match=message):
        parse_condition(condition)
