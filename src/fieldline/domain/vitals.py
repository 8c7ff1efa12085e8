"""Which metrics a device's battery and signal are reported as.

Firmware names them differently; the status answer and the dashboard's devices
table show the latest value of the first of these names a device reports.
"""

from __future__ import annotations

from collections.abc import Mapping

BATTERY_METRICS = ("battery_voltage", "battery")
SIGNAL_METRICS = ("signal_strength", "rssi", "signal")


def first_reported(latest: Mapping[str, float], metrics: tuple[str, ...]) -> float | None:
    """The value of the first of `metrics` in `latest` (metric name -> latest value)."""
    for metric in metrics:
        if metric in latest:
            return latest[metric]
    return None
