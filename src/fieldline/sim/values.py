"""Plausible sensor readings for one simulated field device.

Values follow slow physical trends (a daily temperature cycle, a discharging
battery, soil drying out between waterings) so dashboards, alert rules and
rollups see data shaped like a real fleet's rather than white noise.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

SECONDS_PER_DAY = 86_400.0
BATTERY_FULL_V = 4.2
BATTERY_EMPTY_V = 3.3
# Simulated time compresses a week of discharge into this many real seconds so
# that a benchmark of minutes still shows a visible trend.
DEFAULT_DISCHARGE_SECONDS = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample of every sensor, as the device would report it."""

    timestamp_ms: int
    temperature: float
    humidity: float
    battery_voltage: float
    soil_moisture: float
    pressure: float
    signal_strength: int

    def sensors(self) -> dict[str, float]:
        return {
            "temperature": self.temperature,
            "humidity": self.humidity,
            "battery_voltage": self.battery_voltage,
            "soil_moisture": self.soil_moisture,
            "pressure": self.pressure,
        }


# Metrics a stored reading yields: the five sensors plus top-level `signal_strength`
# (SPEC §2 counts top-level numbers as metrics).
METRICS_PER_READING = 6


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else min(value, high)


class SensorModel:
    """Mutable per-device state; `sample` advances it to the given time.

    Deliberately a plain slotted class, not a dataclass: it is the one piece of
    per-message mutable state and is touched on the hot path.
    """

    __slots__ = (
        "_battery_start",
        "_discharge_per_s",
        "_last_s",
        "_noise",
        "_pressure",
        "_rng",
        "_signal",
        "_soil",
        "_start_s",
        "_temp_offset",
    )

    def __init__(
        self,
        *,
        seed: int,
        start_s: float,
        discharge_seconds: float = DEFAULT_DISCHARGE_SECONDS,
    ) -> None:
        self._rng = random.Random(seed)  # noqa: S311 -- simulated values, not secrets
        rng = self._rng
        self._start_s = start_s
        self._last_s = start_s
        # Devices differ: some sit in shade, some start half discharged.
        self._temp_offset = rng.uniform(-3.0, 3.0)
        self._battery_start = rng.uniform(3.7, BATTERY_FULL_V)
        self._discharge_per_s = (BATTERY_FULL_V - BATTERY_EMPTY_V) / discharge_seconds
        self._noise = 0.0
        self._soil = rng.uniform(30.0, 60.0)
        self._pressure = rng.uniform(1005.0, 1020.0)
        self._signal = rng.uniform(-80.0, -60.0)

    def sample(self, timestamp_ms: int) -> Reading:
        rng = self._rng
        now_s = timestamp_ms / 1000.0
        dt = max(now_s - self._last_s, 0.0)
        self._last_s = now_s

        # Daily cycle peaking mid-afternoon (UTC stands in for local time), plus
        # AR(1) noise so consecutive samples are correlated as real ones are.
        day_phase = 2.0 * math.pi * ((now_s % SECONDS_PER_DAY) / SECONDS_PER_DAY - 0.375)
        self._noise = 0.9 * self._noise + rng.gauss(0.0, 0.15)
        temperature = 17.0 + self._temp_offset + 7.0 * math.sin(day_phase) + self._noise

        humidity = _clamp(60.0 - 2.2 * (temperature - 17.0) + rng.gauss(0.0, 1.5), 10.0, 100.0)

        # Discharges linearly to empty, then the battery is "swapped" for a full one.
        span = BATTERY_FULL_V - BATTERY_EMPTY_V
        used = (BATTERY_FULL_V - self._battery_start) + (now_s - self._start_s) * (
            self._discharge_per_s
        )
        battery = BATTERY_FULL_V - (used % span) + rng.gauss(0.0, 0.004)

        # Soil dries slowly and is watered now and then.
        self._soil -= dt * 0.002 + rng.gauss(0.0, 0.05)
        if self._soil < 15.0 or rng.random() < dt / 3600.0:
            self._soil = rng.uniform(55.0, 70.0)
        self._soil = _clamp(self._soil, 5.0, 80.0)

        self._pressure = _clamp(self._pressure + rng.gauss(0.0, 0.05), 980.0, 1040.0)
        self._signal = _clamp(self._signal + rng.gauss(0.0, 1.0), -90.0, -50.0)

        return Reading(
            timestamp_ms=timestamp_ms,
            temperature=round(temperature, 2),
            humidity=round(humidity, 1),
            battery_voltage=round(_clamp(battery, BATTERY_EMPTY_V, BATTERY_FULL_V), 3),
            soil_moisture=round(self._soil, 1),
            pressure=round(self._pressure, 1),
            signal_strength=round(self._signal),
        )
