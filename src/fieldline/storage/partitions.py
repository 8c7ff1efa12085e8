"""The partitions of the three telemetry tiers: created on demand, listed, dropped whole.

Raw points have a partition per UTC day, hourly rollups one per month, daily rollups
one per year (migrations 0001 and 0017). A partition's range is in its name
(`telemetry_p20261207`, `telemetry_hourly_p202612`, `telemetry_daily_p2026`), so
listing them needs no parsing of PostgreSQL's bound expressions; tables of other
names are never touched.

Dropping detaches first, `CONCURRENTLY`: a plain `DROP TABLE` of a partition takes an
ACCESS EXCLUSIVE lock on the parent, which queues behind ingest's open transaction
and then holds every later one back. A detach interrupted half-way (the worker
killed) leaves the partition "pending"; the next drop finishes it.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from psycopg import AsyncConnection
from psycopg.errors import DuplicateTable, UniqueViolation
from psycopg.rows import tuple_row

log = logging.getLogger(__name__)


class Span(enum.Enum):
    DAY = "day"
    MONTH = "month"
    YEAR = "year"


@dataclass(frozen=True, slots=True)
class Tier:
    name: str  # as settings, metrics and the API say it
    table: str
    span: Span
    fillfactor: int | None  # rows updated in place keep room for HOT updates (0010)

    def start(self, day: date) -> date:
        """The first day of the partition holding `day`."""
        if self.span is Span.DAY:
            return day
        if self.span is Span.MONTH:
            return day.replace(day=1)
        return day.replace(month=1, day=1)

    def end(self, start: date) -> date:
        """The first day after the partition starting at `start`."""
        if self.span is Span.DAY:
            return date.fromordinal(start.toordinal() + 1)
        if self.span is Span.MONTH:
            return date(start.year + start.month // 12, start.month % 12 + 1, 1)
        return date(start.year + 1, 1, 1)

    def partition(self, start: date) -> str:
        suffix = {Span.DAY: "%Y%m%d", Span.MONTH: "%Y%m", Span.YEAR: "%Y"}[self.span]
        return f"{self.table}_p{start.strftime(suffix)}"

    def parse(self, name: str) -> date | None:
        """The start of the partition called `name`; None for a table not named so."""
        digits = {Span.DAY: 8, Span.MONTH: 6, Span.YEAR: 4}[self.span]
        match = re.fullmatch(rf"{self.table}_p(\d{{{digits}}})", name)
        if match is None:
            return None
        text = match[1]
        return date(int(text[:4]), int(text[4:6] or 1), int(text[6:8] or 1))


RAW = Tier("raw", "telemetry", Span.DAY, None)
HOURLY = Tier("hourly", "telemetry_hourly", Span.MONTH, 50)
DAILY = Tier("daily", "telemetry_daily", Span.YEAR, 50)
TIERS = (RAW, HOURLY, DAILY)


async def create(conn: AsyncConnection[object], tier: Tier, day: date) -> None:
    """The partition of `tier` holding `day`, unless it exists."""
    start = tier.start(day)
    storage = f" WITH (fillfactor = {tier.fillfactor})" if tier.fillfactor else ""
    try:
        async with conn.transaction():
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {tier.partition(start)} PARTITION OF {tier.table} "
                f"FOR VALUES FROM ('{start.isoformat()} 00:00:00+00') "
                f"TO ('{tier.end(start).isoformat()} 00:00:00+00'){storage}".encode()
            )
    except (DuplicateTable, UniqueViolation):
        # Another process created it at the same moment.
        log.debug("partition created concurrently", extra={"partition": tier.partition(start)})


async def create_for_days(conn: AsyncConnection[object], days: Iterable[date]) -> None:
    """Every tier's partitions for `days` (a batch's, or a range seeded at once)."""
    for tier in TIERS:
        for start in sorted({tier.start(day) for day in days}):
            await create(conn, tier, start)


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start: date
    end: date
    bytes: int  # on disk, indexes included
    rows: int  # PostgreSQL's estimate (ANALYZE keeps it), 0 when never analyzed
    detaching: bool  # a concurrent detach was interrupted


async def partitions(conn: AsyncConnection[object], tier: Tier) -> list[Partition]:
    """The tier's partitions, oldest first."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT c.relname, pg_total_relation_size(c.oid), greatest(c.reltuples, 0)::int8,"
        " i.inhdetachpending FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass",
        (tier.table,),
    )
    found = []
    for name, size, rows, detaching in await cursor.fetchall():
        start = tier.parse(name)
        if start is not None:
            found.append(Partition(name, start, tier.end(start), size, rows, detaching))
    return sorted(found, key=lambda p: p.start)


async def drop(conn: AsyncConnection[object], tier: Tier, partition: Partition) -> None:
    """Detach (concurrently) and drop one partition. `conn` must be in autocommit mode:
    a concurrent detach runs as two transactions of its own."""
    how = "FINALIZE" if partition.detaching else "CONCURRENTLY"
    await conn.execute(f"ALTER TABLE {tier.table} DETACH PARTITION {partition.name} {how}".encode())
    await conn.execute(f"DROP TABLE IF EXISTS {partition.name}".encode())
