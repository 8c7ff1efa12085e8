"""Reading telemetry back: latest values, raw points and time buckets."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from fieldline.storage.db import Row
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]

# Writers announce on this channel, at commit, which devices' latest values changed:
# device ids joined by commas (ids cannot contain one), in payloads under PostgreSQL's
# 8,000-byte limit. The API's fleet view (api/latest.py) keeps itself current from it.
LATEST_CHANNEL = "fieldline_latest"
_NOTIFY_PAYLOAD_BYTES = 7_900


_EPOCH_TIME = datetime(1970, 1, 1, tzinfo=UTC)


class Aggregate(StrEnum):
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    COUNT = "count"
    SUM = "sum"


@dataclass(frozen=True, slots=True)
class Point:
    time: datetime
    value: float


@dataclass(frozen=True, slots=True)
class LatestValue:
    device_id: str
    metric: str
    time: datetime
    value: float


async def latest_values(conn: Conn, device_ids: list[str]) -> list[LatestValue]:
    return [
        LatestValue(device_id, metric, time, value)
        for device_id, metric, value, time in await latest_rows(conn, device_ids)
    ]


def latest_change_payloads(device_ids: Iterable[str]) -> list[str]:
    """Comma-joined device ids, cut into payloads a NOTIFY accepts."""
    payloads: list[str] = []
    current: list[str] = []
    size = 0
    for device_id in sorted(set(device_ids)):
        if current and size + len(device_id) + 1 > _NOTIFY_PAYLOAD_BYTES:
            payloads.append(",".join(current))
            current, size = [], 0
        current.append(device_id)
        size += len(device_id) + 1
    if current:
        payloads.append(",".join(current))
    return payloads


async def announce_latest_changes(conn: AsyncConnection[Any], device_ids: Iterable[str]) -> None:
    """Tell listeners, when this transaction commits, whose latest values changed."""
    payloads = latest_change_payloads(device_ids)
    if payloads:
        await conn.execute(
            "SELECT pg_notify(%s, payload) FROM unnest(%b::text[]) AS payload",
            (LATEST_CHANNEL, payloads),
        )


async def latest_rows(
    conn: AsyncConnection[Any], device_ids: list[str] | None
) -> list[tuple[str, str, float, datetime]]:
    """`(device, metric, value, time)` of these devices (None: every device), in order."""
    cursor = conn.cursor(row_factory=tuple_row, binary=True)
    if device_ids is None:
        await cursor.execute(
            "SELECT device_id, metric, value, time FROM telemetry_latest ORDER BY device_id, metric"
        )
    else:
        await cursor.execute(
            "SELECT device_id, metric, value, time FROM telemetry_latest"
            " WHERE device_id = ANY(%s) ORDER BY device_id, metric",
            (device_ids,),
        )
    return await cursor.fetchall()


async def fleet_page(
    conn: AsyncConnection[Any], *, group: str | None, limit: int, cursor: str | None
) -> Page[str]:
    """Device ids of the fleet (optionally of one group), a page at a time, in id order."""
    after = decode_cursor(cursor, 1)
    params = {"group": group, "after": after[0] if after else None, "limit": limit + 1}
    rows = conn.cursor(row_factory=tuple_row)
    if group is None:  # the devices' primary key gives the order, no join or sort
        await rows.execute(
            "SELECT device_id FROM devices WHERE %(after)s::text IS NULL"
            " OR device_id > %(after)s::text ORDER BY device_id LIMIT %(limit)s",
            params,
        )
    else:
        await rows.execute(
            "SELECT d.device_id FROM devices d JOIN groups g ON g.id = d.group_id"
            " WHERE g.name = %(group)s"
            " AND (%(after)s::text IS NULL OR d.device_id > %(after)s::text)"
            " ORDER BY d.device_id LIMIT %(limit)s",
            params,
        )
    ids = [row[0] for row in await rows.fetchall()]
    more = len(ids) > limit
    del ids[limit:]
    return Page(ids, encode_cursor(ids[-1]) if more else None)


async def raw_points(
    conn: Conn,
    *,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    limit: int,
    cursor: str | None,
) -> Page[Point]:
    after = decode_cursor(cursor, 1)
    since = datetime.fromisoformat(str(after[0])) if after else None
    rows = await (
        await conn.execute(
            "SELECT time, value FROM telemetry WHERE device_id = %(device)s AND metric = %(metric)s"
            " AND time >= %(start)s AND time < %(end)s"
            " AND (%(after)s::timestamptz IS NULL OR time > %(after)s::timestamptz)"
            " ORDER BY time LIMIT %(limit)s",
            {
                "device": device_id,
                "metric": metric,
                "start": start,
                "end": end,
                "after": since,
                "limit": limit + 1,
            },
        )
    ).fetchall()
    items = [Point(**row) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].time.isoformat()) if len(rows) > limit else None)


HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
EPOCH = "TIMESTAMPTZ '1970-01-01 00:00:00+00'"
# How each aggregate combines rollups (count, sum, min, max) into a bucket.
_FROM_ROLLUPS = {
    Aggregate.AVG: "sum(sum) / sum(count)",
    Aggregate.MIN: "min(min)",
    Aggregate.MAX: "max(max)",
    Aggregate.COUNT: "sum(count)::float8",
    Aggregate.SUM: "sum(sum)",
}


async def bucketed_points(
    conn: Conn,
    *,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    bucket: timedelta,
    aggregate: Aggregate,
) -> list[Point]:
    """One point per bucket, buckets aligned to the epoch so charts line up across queries.

    Each bucket is read from the coarsest tier that answers it exactly: buckets of whole
    days read the daily rollups for the range's whole days, the hourly ones for the
    whole hours at its edges and raw points only for its partial first and last hours
    (a one-year chart reads about 365 rows, not 8,760 or every point); buckets of whole
    hours read the hourly rollups and raw points at the edges. So a chart keeps working
    over a range whose raw points (or hourly rollups) retention has dropped.
    """
    tiers = _tiers(start, end, bucket)
    if tiers is None:
        rows = await (
            await conn.execute(
                f"SELECT date_bin(%(bucket)s, time, {EPOCH}) AS time,"
                f" {aggregate.value}(value)::float8 AS value FROM telemetry"
                " WHERE device_id = %(device)s AND metric = %(metric)s"
                " AND time >= %(start)s AND time < %(end)s GROUP BY 1 ORDER BY 1",
                {
                    "bucket": bucket,
                    "device": device_id,
                    "metric": metric,
                    "start": start,
                    "end": end,
                },
            )
        ).fetchall()
        return [Point(**row) for row in rows]
    rows = await (
        await conn.execute(
            f"WITH parts AS ({_tiered_parts('device_id = %(device)s')})"
            f" SELECT date_bin(%(bucket)s, time, {EPOCH}) AS time,"
            f" {_FROM_ROLLUPS[aggregate]} AS value FROM parts GROUP BY 1 ORDER BY 1",
            {
                "bucket": bucket,
                "device": device_id,
                "metric": metric,
                "start": start,
                "end": end,
                **tiers,
            },
        )
    ).fetchall()
    return [Point(**row) for row in rows]


async def bucketed_many(
    conn: Conn,
    *,
    device_ids: list[str],
    metric: str,
    start: datetime,
    end: datetime,
    bucket: timedelta,
    aggregate: Aggregate,
) -> dict[str, list[Point]]:
    """`bucketed_points` of many devices in one query: by device, the same points."""
    tiers = _tiers(start, end, bucket)
    params: dict[str, object] = {
        "bucket": bucket,
        "devices": device_ids,
        "metric": metric,
        "start": start,
        "end": end,
        **(tiers or {}),
    }
    if tiers is None:
        query = (
            f"SELECT device_id, date_bin(%(bucket)s, time, {EPOCH}) AS time,"
            f" {aggregate.value}(value)::float8 AS value FROM telemetry"
            " WHERE device_id = ANY(%(devices)s) AND metric = %(metric)s"
            " AND time >= %(start)s AND time < %(end)s GROUP BY 1, 2 ORDER BY 1, 2"
        )
    else:
        query = (
            f"WITH parts AS ({_tiered_parts('device_id = ANY(%(devices)s)')})"
            f" SELECT device_id, date_bin(%(bucket)s, time, {EPOCH}) AS time,"
            f" {_FROM_ROLLUPS[aggregate]} AS value FROM parts GROUP BY 1, 2 ORDER BY 1, 2"
        )
    found: dict[str, list[Point]] = {device: [] for device in device_ids}
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(query.encode(), params)
    for device, time, value in await cursor.fetchall():
        found[device].append(Point(time, value))
    return found


def _tiers(start: datetime, end: datetime, bucket: timedelta) -> dict[str, datetime] | None:
    """Where a bucketed read switches tiers: whole days [day_start, day_end) from the daily
    rollups (none unless buckets are whole days), whole hours [hour_start, hour_end) around
    them from the hourly ones, raw points at the edges. None when only raw points answer:
    buckets that are not whole hours, or a range without one whole hour."""
    hours = _whole(start, end, HOUR)
    if bucket % HOUR or hours is None:
        return None
    days = _whole(start, end, DAY) if bucket % DAY == timedelta(0) else None
    day_start, day_end = days if days is not None else (hours[1], hours[1])
    return {
        "hour_start": hours[0],
        "hour_end": hours[1],
        "day_start": day_start,
        "day_end": day_end,
    }


def _tiered_parts(which: str) -> str:
    """Rows (device_id, time, count, sum, min, max) of the metric for the devices `which`
    matches, each tier over its part of the range (`_tiers`' bounds)."""
    return (
        "SELECT device_id, day AS time, count, sum, min, max FROM telemetry_daily"
        f" WHERE {which} AND metric = %(metric)s"
        " AND day >= %(day_start)s AND day < %(day_end)s"
        " UNION ALL"
        " SELECT device_id, hour, count, sum, min, max FROM telemetry_hourly"
        f" WHERE {which} AND metric = %(metric)s"
        " AND ((hour >= %(hour_start)s AND hour < %(day_start)s)"
        " OR (hour >= %(day_end)s AND hour < %(hour_end)s))"
        " UNION ALL"
        " SELECT device_id, time, 1, value, value, value FROM telemetry"
        f" WHERE {which} AND metric = %(metric)s"
        " AND ((time >= %(start)s AND time < %(hour_start)s)"
        " OR (time >= %(hour_end)s AND time < %(end)s))"
    )


@dataclass(frozen=True, slots=True)
class TrendPoint:
    time: datetime
    avg: float
    min: float
    max: float
    count: int  # readings in the bucket, all devices together
    devices: int  # devices with at least one reading in it


async def trend_points(
    conn: Conn,
    *,
    device_ids: list[str],
    metric: str,
    start: datetime,
    end: datetime,
    bucket: timedelta,
) -> list[TrendPoint]:
    """One point per bucket across many devices (a group's trend): the mean of all their
    readings, the lowest, the highest, and how many devices reported. Read from the same
    tiers as `bucketed_points`, so a group's year costs its devices' daily rollups."""
    tiers = _tiers(start, end, bucket)
    which = "device_id = ANY(%(devices)s)"
    parts = (
        _tiered_parts(which)
        if tiers is not None
        else "SELECT device_id, time, 1 AS count, value AS sum, value AS min, value AS max"
        f" FROM telemetry WHERE {which} AND metric = %(metric)s"
        " AND time >= %(start)s AND time < %(end)s"
    )
    # Per device and bucket first, then per bucket: devices are counted by the second
    # grouping's rows, not by count(DISTINCT), which sorts every reading.
    rows = await (
        await conn.execute(
            f"WITH parts AS ({parts}),"
            f" per_device AS (SELECT date_bin(%(bucket)s, time, {EPOCH}) AS time,"
            " sum(count) AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max"
            " FROM parts GROUP BY device_id, 1)"
            " SELECT time, sum(sum) / sum(count) AS avg, min(min) AS min, max(max) AS max,"
            " sum(count)::bigint AS count, count(*) AS devices"
            " FROM per_device GROUP BY 1 ORDER BY 1",
            {
                "bucket": bucket,
                "devices": device_ids,
                "metric": metric,
                "start": start,
                "end": end,
                **(tiers or {}),
            },
        )
    ).fetchall()
    return [TrendPoint(**row) for row in rows]


def _whole(start: datetime, end: datetime, unit: timedelta) -> tuple[datetime, datetime] | None:
    """The range's whole `unit`s (epoch-aligned), or None when it holds not one."""
    floor = end - (end - _EPOCH_TIME) % unit
    ceil = start - (start - _EPOCH_TIME) % unit
    if ceil != start:
        ceil += unit
    return (ceil, floor) if ceil < floor else None


async def device_attributes(conn: Conn, device_id: str) -> dict[str, tuple[str, datetime]]:
    rows = await (
        await conn.execute(
            "SELECT key, value, time FROM device_attributes WHERE device_id = %s ORDER BY key",
            (device_id,),
        )
    ).fetchall()
    return {row["key"]: (row["value"], row["time"]) for row in rows}


SERIES_CHUNK = 10_000


async def stream_series(
    conn: Conn, *, device_id: str, metric: str, start: datetime, end: datetime, limit: int
) -> AsyncGenerator[list[tuple[datetime, float]]]:
    """Raw `(time, value)` points of one series in time order, at most `limit`, a chunk at a
    time from a server-side cursor: a month of a busy series is never all in memory, and
    the caller's event loop gets a turn between chunks. Close it (`aclosing`) if not drained.
    """
    async with conn.transaction():
        cursor = conn.cursor("fieldline_series", row_factory=tuple_row, binary=True)
        await cursor.execute(
            "SELECT time, value FROM telemetry WHERE device_id = %s AND metric = %s"
            " AND time >= %s AND time < %s ORDER BY time LIMIT %s",
            (device_id, metric, start, end, limit),
        )
        try:
            while rows := await cursor.fetchmany(SERIES_CHUNK):
                yield rows
        finally:
            await cursor.close()


async def last_time_before(
    conn: Conn, *, device_id: str, metric: str, before: datetime
) -> datetime | None:
    """When the series last had a point before `before`."""
    row = await (
        await conn.execute(
            "SELECT max(time) AS time FROM telemetry"
            " WHERE device_id = %s AND metric = %s AND time < %s",
            (device_id, metric, before),
        )
    ).fetchone()
    return row["time"] if row else None
