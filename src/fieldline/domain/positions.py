"""Where a device is: which of its metrics hold its latitude and longitude. Pure.

Metric metadata says it (kind `latitude` and `longitude`, per device type); a device type
without such entries follows the common names (`lat`/`latitude`, `lon`/`lng`/`longitude`),
so a tracker shows on a map before anyone has described it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from fieldline.domain.metrics import MetricKind, MetricMeta

LATITUDE_NAMES = ("lat", "latitude")
LONGITUDE_NAMES = ("lon", "lng", "longitude")


@dataclass(frozen=True, slots=True)
class PositionMetrics:
    """The metric names a device's latitude and longitude may be stored under, first
    choice first."""

    latitude: tuple[str, ...]
    longitude: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.latitude, *self.longitude)


def position_metrics(applying: Mapping[str, MetricMeta]) -> PositionMetrics:
    """For a device whose metadata entries are `applying` (by metric, as
    `metrics.applying` answers): its latitude and longitude metrics."""
    latitude = tuple(sorted(m for m, e in applying.items() if e.kind is MetricKind.LATITUDE))
    longitude = tuple(sorted(m for m, e in applying.items() if e.kind is MetricKind.LONGITUDE))
    if latitude and longitude:
        return PositionMetrics(latitude, longitude)
    # A common name already described as something else is not a coordinate.
    described = {m for m, e in applying.items() if e.kind is not MetricKind.NUMBER}
    return PositionMetrics(
        latitude or tuple(n for n in LATITUDE_NAMES if n not in described),
        longitude or tuple(n for n in LONGITUDE_NAMES if n not in described),
    )


@dataclass(frozen=True, slots=True)
class Position:
    latitude: float
    longitude: float
    time: datetime  # the older of the two readings
    latitude_metric: str
    longitude_metric: str


def position_of(
    metrics: PositionMetrics, latest: Mapping[str, tuple[float, datetime]]
) -> Position | None:
    """The device's position from its latest values (metric → value, time), or None when
    it has not reported both coordinates or they are off the globe."""
    lat = next((m for m in metrics.latitude if m in latest), None)
    lon = next((m for m in metrics.longitude if m in latest), None)
    if lat is None or lon is None:
        return None
    (lat_value, lat_time), (lon_value, lon_time) = latest[lat], latest[lon]
    if not (-90.0 <= lat_value <= 90.0 and -180.0 <= lon_value <= 180.0):
        return None
    return Position(lat_value, lon_value, min(lat_time, lon_time), lat, lon)
