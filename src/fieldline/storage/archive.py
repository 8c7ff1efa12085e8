"""The archive's records (migration 0018) and the rollup counts that say what is due.

An hour is due when the rollups count more (or fewer) points in it than the file
archived for it holds: never archived, or late readings arrived since. The rollups are
exact (storage/writer.py), so their counts stand for the raw points without reading
them; a day's sum is compared first, an hour's only within days that differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

POINTS = "points"
DAILY = "daily"


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    kind: str  # POINTS or DAILY
    start: datetime  # the hour, or the UTC day
    key: str
    rows: int
    counted: int
    bytes: int
    sha256: str
    archived_at: datetime


@dataclass(frozen=True, slots=True)
class LastRun:
    ran_at: datetime
    files: int
    rows: int
    bytes: int
    error: str | None


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def daily_counts(conn: AsyncConnection[object], first: date, last: date) -> dict[date, int]:
    """Points per UTC day from the daily rollups, for days `first`..`last` (inclusive)."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT day, sum(count)::int8 FROM telemetry_daily"
        " WHERE day >= %s AND day < %s GROUP BY day",
        (midnight(first), midnight(last) + timedelta(days=1)),
    )
    return {day.astimezone(UTC).date(): total for day, total in await cursor.fetchall()}


async def hourly_counts(conn: AsyncConnection[object], day: date) -> dict[datetime, int]:
    """Points per hour of one UTC day from the hourly rollups."""
    cursor = conn.cursor(row_factory=tuple_row)
    start = midnight(day)
    await cursor.execute(
        "SELECT hour, sum(count)::int8 FROM telemetry_hourly"
        " WHERE hour >= %s AND hour < %s GROUP BY hour",
        (start, start + timedelta(days=1)),
    )
    return {hour.astimezone(UTC): total for hour, total in await cursor.fetchall()}


async def archived(
    conn: AsyncConnection[object],
    target: str,
    kind: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[datetime, ArchivedFile]:
    """The files of `kind` archived to `target`, by start, optionally within a range."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT kind, start, key, rows, counted, bytes, sha256, archived_at FROM archive_files"
        " WHERE target = %s AND kind = %s AND start >= coalesce(%s::timestamptz, '-infinity')"
        " AND start < coalesce(%s::timestamptz, 'infinity') ORDER BY start",
        (target, kind, since, until),
    )
    return {
        row[1].astimezone(UTC): ArchivedFile(row[0], row[1].astimezone(UTC), *row[2:])
        for row in await cursor.fetchall()
    }


async def record(conn: AsyncConnection[object], target: str, file: ArchivedFile) -> None:
    await conn.execute(
        "INSERT INTO archive_files (target, kind, start, key, rows, counted, bytes, sha256,"
        " archived_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (target, kind, start) DO UPDATE SET key = EXCLUDED.key,"
        " rows = EXCLUDED.rows, counted = EXCLUDED.counted, bytes = EXCLUDED.bytes,"
        " sha256 = EXCLUDED.sha256, archived_at = EXCLUDED.archived_at",
        (
            target,
            file.kind,
            file.start,
            file.key,
            file.rows,
            file.counted,
            file.bytes,
            file.sha256,
            file.archived_at,
        ),
    )


async def record_run(
    conn: AsyncConnection[object],
    target: str,
    ran_at: datetime,
    files: Iterable[ArchivedFile],
    error: str | None,
) -> None:
    written = list(files)
    await conn.execute(
        "INSERT INTO archive_runs (target, ran_at, files, rows, bytes, error)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (target) DO UPDATE SET"
        " ran_at = EXCLUDED.ran_at, files = EXCLUDED.files, rows = EXCLUDED.rows,"
        " bytes = EXCLUDED.bytes, error = EXCLUDED.error",
        (
            target,
            ran_at,
            len(written),
            sum(f.rows for f in written),
            sum(f.bytes for f in written),
            error,
        ),
    )


async def last_run(conn: AsyncConnection[object], target: str) -> LastRun | None:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT ran_at, files, rows, bytes, error FROM archive_runs WHERE target = %s",
        (target,),
    )
    row = await cursor.fetchone()
    return LastRun(*row) if row else None


@dataclass(frozen=True, slots=True)
class Holdings:
    """What the archive at a target holds, as recorded: its hours of points and days."""

    hours: int
    days: int
    rows: int  # points in the hours' files
    bytes: int
    oldest: datetime | None  # the first archived hour
    newest: datetime | None  # the last


async def holdings(conn: AsyncConnection[object], target: str) -> Holdings:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT count(*) FILTER (WHERE kind = 'points'), count(*) FILTER (WHERE kind = 'daily'),"
        " coalesce(sum(rows) FILTER (WHERE kind = 'points'), 0)::int8,"
        " coalesce(sum(bytes), 0)::int8,"
        " min(start) FILTER (WHERE kind = 'points'), max(start) FILTER (WHERE kind = 'points')"
        " FROM archive_files WHERE target = %s",
        (target,),
    )
    row = await cursor.fetchone()
    assert row is not None  # an aggregate always answers a row
    return Holdings(*row)


async def unarchived_days(
    conn: AsyncConnection[object], target: str, days: Iterable[date]
) -> set[date]:
    """Of `days`, those with points the archive at `target` does not hold (yet)."""
    wanted = sorted(set(days))
    if not wanted:
        return set()
    counts = await daily_counts(conn, wanted[0], wanted[-1])
    files = await archived(
        conn, target, POINTS, midnight(wanted[0]), midnight(wanted[-1]) + timedelta(days=1)
    )
    held: dict[date, int] = {}
    for start, file in files.items():
        held[start.date()] = held.get(start.date(), 0) + file.counted
    return {day for day in wanted if counts.get(day, 0) != held.get(day, 0)}
