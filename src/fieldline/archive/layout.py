"""Pure: where each file of the archive goes, and the manifest written beside it.

    points/date=2026-12-07/hour=13/points.parquet   one UTC hour of raw points
    points/date=2026-12-07/hour=13/_manifest.json
    daily/date=2026-12-07/daily.parquet             a UTC day's count/sum/min/max/avg
    daily/date=2026-12-07/_manifest.json

Hive partitioning (`key=value` directories) is what DuckDB, Spark, pandas and Athena
read as columns without configuration; names starting with `_` are skipped by them
(as Spark's `_SUCCESS`), so the manifests do not disturb a reader that globs a tree.
"""

from __future__ import annotations

import builtins
import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

FORMAT = "fieldline-archive/1"
MANIFEST = "_manifest.json"
POINTS_COLUMNS = {"device_id": "string", "metric": "string", "time": "timestamp[us, UTC]",
                  "value": "double"}  # fmt: skip
DAILY_COLUMNS = {"device_id": "string", "metric": "string", "day": "date32", "count": "int64",
                 "sum": "double", "min": "double", "max": "double", "avg": "double"}  # fmt: skip

_POINTS_DIR = re.compile(r"^points/date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/")
_DAILY_DIR = re.compile(r"^daily/date=(\d{4}-\d{2}-\d{2})/")


def points_dir(hour: datetime) -> str:
    hour = hour.astimezone(UTC)
    return f"points/date={hour:%Y-%m-%d}/hour={hour:%H}/"


def daily_dir(day: datetime) -> str:
    return f"daily/date={day.astimezone(UTC):%Y-%m-%d}/"


def points_key(hour: datetime) -> str:
    return points_dir(hour) + "points.parquet"


def daily_key(day: datetime) -> str:
    return daily_dir(day) + "daily.parquet"


def manifest_key(file_key: str) -> str:
    return file_key.rsplit("/", 1)[0] + "/" + MANIFEST


def start_of(key: str) -> tuple[str, datetime] | None:
    """The kind ("points" or "daily") and start of the file or manifest at `key`."""
    if found := _POINTS_DIR.match(key):
        day = datetime.fromisoformat(found[1]).replace(tzinfo=UTC)
        return "points", day + timedelta(hours=int(found[2]))
    if found := _DAILY_DIR.match(key):
        return "daily", datetime.fromisoformat(found[1]).replace(tzinfo=UTC)
    return None


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a file holds, so that it can be checked without the database."""

    format: str
    kind: str  # "points" or "daily"
    file: str  # its key, relative to the archive's root
    start: str  # ISO 8601, UTC: the hour or day the file covers
    end: str
    rows: int
    bytes: int
    sha256: str
    columns: dict[str, str]
    sorted_by: list[str]
    written_at: str
    written_by: str  # fieldline's version

    def to_json(self) -> builtins.bytes:
        return json.dumps(asdict(self), indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: builtins.bytes) -> Manifest:
        """Parse a manifest; ValueError with what is wrong when it is not one."""
        try:
            fields = json.loads(data)
            manifest = cls(**fields)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a fieldline archive manifest: {exc}") from exc
        if manifest.format != FORMAT:
            raise ValueError(f"unknown manifest format {manifest.format!r} (this is {FORMAT})")
        return manifest

    @property
    def start_time(self) -> datetime:
        return datetime.fromisoformat(self.start)


def manifest(
    kind: str,
    key: str,
    start: datetime,
    rows: int,
    size: int,
    sha256: str,
    *,
    written_at: datetime,
    version: str,
) -> Manifest:
    span = timedelta(hours=1) if kind == "points" else timedelta(days=1)
    return Manifest(
        format=FORMAT,
        kind=kind,
        file=key,
        start=start.astimezone(UTC).isoformat(),
        end=(start + span).astimezone(UTC).isoformat(),
        rows=rows,
        bytes=size,
        sha256=sha256,
        columns=POINTS_COLUMNS if kind == "points" else DAILY_COLUMNS,
        sorted_by=["device_id", "time", "metric"] if kind == "points" else ["device_id", "metric"],
        written_at=written_at.astimezone(UTC).isoformat(),
        written_by=version,
    )
