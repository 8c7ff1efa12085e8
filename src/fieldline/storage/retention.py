"""Retention: each tier's partitions dropped whole once all they hold is past the tier's age.

A partition goes only when its end is older than the tier's age, so at most a
partition's span more than the age is kept (a day of raw points, a month of hourly
rollups, a year of daily ones), never less. The rollups are kept by ingest in the
transaction that stores the points (storage/writer.py), not refreshed from them
later, so dropping raw points never changes a rollup. What each run dropped is kept
in `retention_runs`, for the API and the metrics.

With an archive, a raw partition is dropped only once the archive holds every point of
it (storage/archive.py compares the rollups' counts with what was archived): an archive
that cannot be written holds raw points back rather than lose them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from fieldline.storage import archive, partitions
from fieldline.storage.partitions import RAW, Partition, Tier


@dataclass(frozen=True, slots=True)
class TierRun:
    tier: Tier
    dropped: list[Partition]
    held: list[Partition] = field(default_factory=list)  # expired, not yet archived


@dataclass(frozen=True, slots=True)
class LastRun:
    """What retention last did to a tier, as `retention_runs` keeps it."""

    ran_at: datetime
    dropped: list[str]  # partition names
    bytes: int
    rows: int  # PostgreSQL's estimate


async def last_runs(conn: AsyncConnection[object]) -> dict[str, LastRun]:
    """Each tier's last run, by tier name."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute("SELECT tier, ran_at, dropped, bytes, rows FROM retention_runs")
    return {tier: LastRun(*rest) for tier, *rest in await cursor.fetchall()}


def expired(found: list[Partition], keep_days: int, now: datetime) -> list[Partition]:
    """The partitions all of whose rows are older than `keep_days` (0 = kept for good)."""
    if not keep_days:
        return []
    cutoff = now - timedelta(days=keep_days)
    return [p for p in found if datetime(p.end.year, p.end.month, p.end.day, tzinfo=UTC) <= cutoff]


async def apply(
    conn: AsyncConnection[object],
    keep: dict[Tier, int],
    now: datetime,
    archive_target: str | None = None,
) -> list[TierRun]:
    """Drop every tier's expired partitions, oldest first; record what went. `conn` is in
    autocommit mode (a concurrent detach is two transactions of its own). With an
    `archive_target`, raw partitions it does not hold whole yet are kept."""
    runs = []
    for tier, keep_days in keep.items():
        due = expired(await partitions.partitions(conn, tier), keep_days, now)
        held: list[Partition] = []
        if tier == RAW and archive_target is not None and due:
            missing = await archive.unarchived_days(conn, archive_target, [p.start for p in due])
            held = [p for p in due if p.start in missing]
        dropped = []
        for partition in due:
            if partition not in held:
                await partitions.drop(conn, tier, partition)
                dropped.append(partition)
        runs.append(TierRun(tier, dropped, held))
        await conn.execute(
            "INSERT INTO retention_runs (tier, ran_at, dropped, bytes, rows)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tier) DO UPDATE SET"
            " ran_at = EXCLUDED.ran_at, dropped = EXCLUDED.dropped,"
            " bytes = EXCLUDED.bytes, rows = EXCLUDED.rows",
            (
                tier.name,
                now,
                [p.name for p in dropped],
                sum(p.bytes for p in dropped),
                sum(p.rows for p in dropped),
            ),
        )
    return runs
