"""Sensor values look physical, and every payload kind is what its name says."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable

import orjson
import pytest

from fieldline.sim.payloads import (
    OVERSIZED_PAYLOAD_BYTES,
    BadKind,
    TimestampForm,
    bad_telemetry,
    encode_timestamp,
)
from fieldline.sim.values import BATTERY_EMPTY_V, BATTERY_FULL_V, Reading, SensorModel

DAY_MS = 86_400_000


def day_of_readings(seed: int = 1) -> list[Reading]:
    start_ms = 1_728_000_000_000
    model = SensorModel(seed=seed, start_s=start_ms / 1000, discharge_seconds=10 * 86_400)
    return [model.sample(start_ms + i * 60_000) for i in range(24 * 60)]


def test_temperature_follows_the_day_and_humidity_moves_against_it() -> None:
    readings = day_of_readings()
    temps = [r.temperature for r in readings]
    hums = [r.humidity for r in readings]
    assert max(temps) - min(temps) > 8  # a daily swing, not flat noise
    assert statistics.correlation(temps, hums) < -0.8
    assert all(10 <= h <= 100 for h in hums)


def test_battery_discharges_within_its_range() -> None:
    readings = day_of_readings()
    volts = [r.battery_voltage for r in readings]
    assert all(BATTERY_EMPTY_V <= v <= BATTERY_FULL_V for v in volts)
    assert statistics.mean(volts[-60:]) < statistics.mean(volts[:60])
    assert all(-90 <= r.signal_strength <= -50 for r in readings)
    assert all(0 <= r.soil_moisture <= 100 and 950 < r.pressure < 1050 for r in readings)


def test_timestamp_forms_name_the_same_instant() -> None:
    ms = 1_728_561_234_567
    assert encode_timestamp(ms, TimestampForm.EPOCH_SECONDS) == 1_728_561_234.567
    assert encode_timestamp(ms, TimestampForm.EPOCH_MILLISECONDS) == ms
    assert encode_timestamp(ms, TimestampForm.ISO_8601) == "2024-10-10T11:53:54.567Z"


@pytest.mark.parametrize("kind", list(BadKind))
def test_bad_payloads_are_bad_for_their_reason(kind: BadKind) -> None:
    reading = SensorModel(seed=3, start_s=time.time()).sample(int(time.time() * 1000))
    raw = bad_telemetry(kind, reading, device_id="sim-0001", message_id="m-1", spoof_as="sim-0002")
    if kind is BadKind.NOT_JSON:
        with pytest.raises(ValueError, match=r"."):
            json.loads(raw)
        return
    body = json.loads(raw)  # the stdlib reads the NaN literal that strict parsers refuse
    checks: dict[BadKind, Callable[[], bool]] = {
        BadKind.NAN_VALUE: lambda: math.isnan(body["sensors"]["temperature"]),
        BadKind.FUTURE_TIMESTAMP: lambda: body["timestamp"] > time.time() + 86_000,
        BadKind.SPOOFED_DEVICE_ID: lambda: body["device_id"] == "sim-0002",
        BadKind.OVERSIZED: lambda: len(raw) > OVERSIZED_PAYLOAD_BYTES > 65_536,
    }
    assert checks[kind]()
    if kind is BadKind.NAN_VALUE:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)
