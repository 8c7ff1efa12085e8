"""An archive run: every closed hour not yet archived (or changed since) becomes a file.

Idempotent: what was written is recorded in the database (storage/archive.py), so a
second run writes nothing, and a run cut short by a crash or an unreachable store
writes the rest next time. Each file is exported inside one repeatable-read snapshot
together with the rollups' count of its points, so late readings that arrive while it
is written are not lost: they raise the count above the one recorded, and the hour is
written again, whole, by the next run.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

import fieldline
from fieldline.archive import layout
from fieldline.archive.export import Written, export_daily, export_points
from fieldline.blobs.base import BlobStore
from fieldline.storage import archive, partitions
from fieldline.storage.archive import DAILY, POINTS, ArchivedFile, midnight

log = logging.getLogger(__name__)

# An hour is closed this long after its end: a reading taken at 13:59:59 is normally
# stored within seconds; what comes later still gets archived, as a late reading.
GRACE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Due:
    """What a run has to write: hours of raw points and days of aggregates, oldest first."""

    hours: list[datetime]
    days: list[datetime]

    @property
    def files(self) -> int:
        return len(self.hours) + len(self.days)


def closed_until(now: datetime) -> datetime:
    """The end of the newest closed hour at `now`."""
    moment = (now - GRACE).astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


async def due(conn: AsyncConnection[object], target: str, now: datetime) -> Due:
    """Closed hours (and days) whose points the archive at `target` does not hold."""
    until = closed_until(now)
    days = [
        p.start
        for p in await partitions.partitions(conn, partitions.RAW)
        if midnight(p.start) < until
    ]
    if not days:
        return Due([], [])
    counts = await archive.daily_counts(conn, days[0], days[-1])
    since = midnight(days[0])
    points = await archive.archived(conn, target, POINTS, since, until)
    dailies = await archive.archived(conn, target, DAILY, since, until)
    held: dict[datetime, int] = {}
    for start, recorded in points.items():
        key = midnight(start.date())
        held[key] = held.get(key, 0) + recorded.counted
    hours: list[datetime] = []
    day_files: list[datetime] = []
    for day in days:
        start = midnight(day)
        total = counts.get(day, 0)
        if total != held.get(start, 0):
            # Only a day whose sum differs is looked at hour by hour.
            for hour, count in sorted((await archive.hourly_counts(conn, day)).items()):
                was = points.get(hour)
                if hour < until and count and (was is None or was.counted != count):
                    hours.append(hour)
        daily = dailies.get(start)
        closed = start + timedelta(days=1) <= until
        if closed and total and (daily is None or daily.counted != total):
            day_files.append(start)
    return Due(hours, day_files)


async def write(
    conn: AsyncConnection[object],
    store: BlobStore,
    target: str,
    todo: Due,
    on_written: Callable[[ArchivedFile], None] = lambda _file: None,
) -> list[ArchivedFile]:
    """Write every file `todo` names, recording each as it is stored. `conn` is in
    autocommit mode: each file is a transaction of its own."""
    written = []
    with tempfile.TemporaryDirectory(prefix="fieldline-archive-") as scratch:
        work = Path(scratch)
        for kind, starts in ((POINTS, todo.hours), (DAILY, todo.days)):
            for start in starts:
                file = await _write_one(conn, store, target, kind, start, work)
                written.append(file)
                on_written(file)
    return written


async def _write_one(
    conn: AsyncConnection[object],
    store: BlobStore,
    target: str,
    kind: str,
    start: datetime,
    work: Path,
) -> ArchivedFile:
    csv, parquet = work / "rows.csv", work / "file.parquet"
    async with conn.transaction():
        # One snapshot for the rows and the count they are recorded with.
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        counted = await _counted(conn, kind, start)
        if kind == POINTS:
            exported: Written = await export_points(conn, start, csv, parquet)
            key = layout.points_key(start)
        else:
            exported = await export_daily(conn, start, csv, parquet)
            key = layout.daily_key(start)
    now = datetime.now(UTC)
    manifest = layout.manifest(
        kind,
        key,
        start,
        exported.rows,
        exported.bytes,
        exported.sha256,
        written_at=now,
        version=fieldline.__version__,
    )
    # The file first, then its manifest: a manifest always describes a whole file.
    await asyncio.to_thread(store.put_file, key, parquet)
    await asyncio.to_thread(store.put_bytes, layout.manifest_key(key), manifest.to_json())
    file = ArchivedFile(
        kind, start, key, exported.rows, counted, exported.bytes, exported.sha256, now
    )
    await archive.record(conn, target, file)
    log.info(
        "archived",
        extra={"kind": kind, "start": start.isoformat(), "rows": file.rows, "bytes": file.bytes},
    )
    return file


async def _counted(conn: AsyncConnection[object], kind: str, start: datetime) -> int:
    table, column = ("telemetry_hourly", "hour") if kind == POINTS else ("telemetry_daily", "day")
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        f"SELECT coalesce(sum(count), 0)::int8 FROM {table} WHERE {column} = %s".encode(),
        (start,),
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0
