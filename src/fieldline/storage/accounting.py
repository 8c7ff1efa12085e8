"""Storage accounting: how big the database is, per tier, per device, and how fast it grows.

Sizes come from PostgreSQL's catalogs and are cheap to read at any moment. Points per
device are summed from the daily rollups over the days the raw tier still holds, which
reads a row per device, metric and day (1.5 million for 10,000 devices of 5 metrics
over 30 days), so the worker's `storage` job computes them once an hour and keeps
them in its snapshot; the API answers the newest snapshot's.

The growth rate is measured, not predicted: each snapshot records the database's size,
and the rate is the change since the oldest snapshot of the last week. It includes
what retention drops, so a fleet whose raw tier has reached its age grows only by its
rollups, and `days_until_full` says so.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import orjson
from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from fieldline.config import Settings
from fieldline.storage import partitions
from fieldline.storage.embedded import server_directory
from fieldline.storage.partitions import RAW, TIERS

TOP_DEVICES = 10
GROWTH_WINDOW = timedelta(days=7)
# A size change over less time than this says more about autovacuum than about growth.
GROWTH_MIN_SPAN = timedelta(hours=1)
SNAPSHOTS_KEPT = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class TierSize:
    tier: str
    partitions: int
    bytes: int
    rows: int  # PostgreSQL's estimate
    oldest: date | None  # the first day its partitions cover
    newest: date | None  # the last day its partitions cover


@dataclass(frozen=True, slots=True)
class DevicePoints:
    device_id: str
    points: int


@dataclass(frozen=True, slots=True)
class Disk:
    path: str
    total_bytes: int
    free_bytes: int


async def database_bytes(conn: AsyncConnection[object]) -> int:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute("SELECT pg_database_size(current_database())")
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def tier_sizes(conn: AsyncConnection[object]) -> list[TierSize]:
    sizes = []
    for tier in TIERS:
        found = await partitions.partitions(conn, tier)
        sizes.append(
            TierSize(
                tier.name,
                len(found),
                sum(p.bytes for p in found),
                sum(p.rows for p in found),
                found[0].start if found else None,
                found[-1].end - timedelta(days=1) if found else None,
            )
        )
    return sizes


async def top_devices(
    conn: AsyncConnection[object], since: date, limit: int = TOP_DEVICES
) -> list[DevicePoints]:
    """The devices with the most points since `since` (the raw tier's first day)."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT device_id, sum(count)::int8 FROM telemetry_daily WHERE day >= %s"
        " GROUP BY device_id ORDER BY 2 DESC, 1 LIMIT %s",
        (since, limit),
    )
    return [DevicePoints(device, int(points)) for device, points in await cursor.fetchall()]


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    database_bytes: int
    since: date | None  # points per device are counted from this day on
    top_devices: list[DevicePoints]


async def take_snapshot(conn: AsyncConnection[object], now: datetime) -> Snapshot:
    """Measure what the API shows and keep it; forget snapshots past SNAPSHOTS_KEPT."""
    size = await database_bytes(conn)
    raw = await partitions.partitions(conn, RAW)
    since = raw[0].start if raw else None
    top = await top_devices(conn, since) if since else []
    await conn.execute(
        "INSERT INTO storage_snapshots (taken_at, database_bytes, since, top_devices)"
        " VALUES (%s, %s, %s, %s)",
        (
            now,
            size,
            since,
            orjson.dumps([[d.device_id, d.points] for d in top]).decode(),
        ),
    )
    await conn.execute("DELETE FROM storage_snapshots WHERE taken_at < %s", (now - SNAPSHOTS_KEPT,))
    return Snapshot(now, size, since, top)


async def latest_snapshot(conn: AsyncConnection[object]) -> Snapshot | None:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT taken_at, database_bytes, since, top_devices FROM storage_snapshots"
        " ORDER BY taken_at DESC LIMIT 1"
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    taken_at, size, since, top = row
    return Snapshot(taken_at, size, since, [DevicePoints(d, int(p)) for d, p in top])


async def growth_per_day(conn: AsyncConnection[object], now: datetime, size: int) -> float | None:
    """Bytes a day the database grew by, from the oldest snapshot of the last week to
    `size` now; None until a snapshot is at least GROWTH_MIN_SPAN old."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT taken_at, database_bytes FROM storage_snapshots"
        " WHERE taken_at >= %s AND taken_at <= %s ORDER BY taken_at LIMIT 1",
        (now - GROWTH_WINDOW, now - GROWTH_MIN_SPAN),
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    taken_at, then = row
    elapsed: timedelta = now - taken_at
    return (size - int(then)) / (elapsed / timedelta(days=1))


def database_disk(settings: Settings) -> Disk | None:
    """The disk of the embedded database; None for an external server (whose disk
    fieldline cannot see) or when its directory cannot be read."""
    if settings.database_url:
        return None
    path = server_directory(settings.data_dir)
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return Disk(str(path), usage.total, usage.free)


def days_until_full(free_bytes: int, growth: float | None) -> float | None:
    """Days until `free_bytes` are used at `growth` bytes a day; None if it does not grow."""
    if growth is None or growth <= 0:
        return None
    return free_bytes / growth
