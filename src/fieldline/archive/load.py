"""`fieldline archive import`: hours of archived points back into PostgreSQL.

Into the instance that archived them (after retention dropped them) or a new one,
without duplicates: each hour's file goes into a temporary table and only the rows
the database does not already hold go in (`EXCEPT ALL`, which counts a point taken
twice with the same value twice, as ingest stored it). Rollups already count points
that retention dropped, so they are rebuilt only where the raw points now outnumber
them: the hours (and days) of an instance that never had these points.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from fieldline.archive.catalog import Entry
from fieldline.archive.export import sha256_of
from fieldline.blobs.base import BlobStore
from fieldline.storage import partitions
from fieldline.storage.archive import midnight

log = logging.getLogger(__name__)


class ArchiveDamaged(RuntimeError):
    """A file does not match its manifest: nothing of it is imported."""


@dataclass(frozen=True, slots=True)
class Imported:
    start: datetime
    rows: int  # in the file
    added: int  # rows the database did not hold


async def import_hours(
    conn: AsyncConnection[object],
    store: BlobStore,
    found: list[Entry],
    on_hour: Callable[[Imported], None] = lambda _hour: None,
) -> list[Imported]:
    """Import every points file of `found` (oldest first), one transaction per hour.
    `conn` is in autocommit mode."""
    hours = [entry for entry in found if entry.kind == "points"]
    done = []
    days: set[date] = set()
    with tempfile.TemporaryDirectory(prefix="fieldline-import-") as scratch:
        work = Path(scratch)
        for entry in hours:
            table = await asyncio.to_thread(_read, store, entry, work / "file.parquet")
            csv = work / "rows.csv"
            await asyncio.to_thread(_to_csv, table, csv)
            async with conn.transaction():
                added = await _insert_hour(conn, entry.start, csv)
            imported = Imported(entry.start, table.num_rows, added)
            if added:
                days.add(entry.start.date())
            done.append(imported)
            on_hour(imported)
    for day in sorted(days):
        async with conn.transaction():
            await _rebuild_daily(conn, day)
    return done


def _read(store: BlobStore, entry: Entry, local: Path) -> pa.Table:
    if entry.blob is None or entry.manifest is None:
        raise ArchiveDamaged(f"{entry.key}: {entry.problem or 'the file is missing'}")
    store.get_file(entry.key, local)
    if sha256_of(local) != entry.manifest.sha256:
        raise ArchiveDamaged(f"{entry.key}: its sha256 differs from its manifest's")
    table = pq.read_table(local)
    if table.num_rows != entry.manifest.rows:
        raise ArchiveDamaged(
            f"{entry.key}: {table.num_rows} rows, its manifest says {entry.manifest.rows}"
        )
    return table


def _to_csv(table: pa.Table, csv: Path) -> None:
    # Times as integer microseconds: exact, whatever the reader's time zone.
    columns = table.select(["device_id", "metric", "time", "value"])
    micros = columns.column("time").cast(pa.int64())
    columns = columns.set_column(2, "time", micros)
    pacsv.write_csv(columns, csv, pacsv.WriteOptions(include_header=False))


async def _insert_hour(conn: AsyncConnection[object], hour: datetime, csv: Path) -> int:
    await partitions.create_for_days(conn, [hour.date()])
    await conn.execute(
        "CREATE TEMP TABLE archive_import (device_id text, metric text, time_us int8,"
        " value float8) ON COMMIT DROP"
    )
    cursor = conn.cursor()
    async with cursor.copy(b"COPY archive_import FROM STDIN (FORMAT csv)") as copy:
        with csv.open("rb") as rows:
            while chunk := rows.read(1 << 20):
                await copy.write(chunk)
    end = hour + timedelta(hours=1)
    points = "TIMESTAMPTZ 'epoch' + time_us * INTERVAL '1 microsecond', device_id, metric, value"
    held = await _count(
        conn,
        "SELECT count(*) FROM (SELECT FROM telemetry WHERE time >= %s AND time < %s LIMIT 1) t",
        hour,
        end,
    )
    if held:
        inserted = await conn.execute(
            f"INSERT INTO telemetry (time, device_id, metric, value) SELECT {points}"
            " FROM archive_import EXCEPT ALL SELECT time, device_id, metric, value"
            " FROM telemetry WHERE time >= %s AND time < %s".encode(),
            (hour, end),
        )
    else:
        # An hour retention dropped (or a new instance): nothing to compare with, and rows
        # in the index's order go into it in one sweep rather than at random.
        inserted = await conn.execute(
            f"INSERT INTO telemetry (time, device_id, metric, value) SELECT {points}"
            " FROM archive_import ORDER BY device_id, metric, time_us".encode()
        )
    added = max(inserted.rowcount, 0)
    if added:
        await _rebuild_hourly(conn, hour)
        await _keep_latest(conn)
    return added


async def _count(conn: AsyncConnection[object], sql: str, *args: object) -> int:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(sql.encode(), args)
    row = await cursor.fetchone()
    return int(row[0] or 0) if row else 0


async def _rebuild_hourly(conn: AsyncConnection[object], hour: datetime) -> None:
    end = hour + timedelta(hours=1)
    raw = await _count(
        conn, "SELECT count(*) FROM telemetry WHERE time >= %s AND time < %s", hour, end
    )
    rolled = await _count(conn, "SELECT sum(count) FROM telemetry_hourly WHERE hour = %s", hour)
    if raw <= rolled:
        return  # the rollups already count these points: retention dropped only raw ones
    await conn.execute("DELETE FROM telemetry_hourly WHERE hour = %s", (hour,))
    await conn.execute(
        "INSERT INTO telemetry_hourly (device_id, metric, hour, count, sum, min, max)"
        " SELECT device_id, metric, %s, count(*), sum(value), min(value), max(value)"
        " FROM telemetry WHERE time >= %s AND time < %s GROUP BY device_id, metric",
        (hour, hour, end),
    )


async def _rebuild_daily(conn: AsyncConnection[object], day: date) -> None:
    start = midnight(day)
    end = start + timedelta(days=1)
    hourly = await _count(
        conn, "SELECT sum(count) FROM telemetry_hourly WHERE hour >= %s AND hour < %s", start, end
    )
    daily = await _count(conn, "SELECT sum(count) FROM telemetry_daily WHERE day = %s", start)
    if hourly <= daily:
        return
    await conn.execute("DELETE FROM telemetry_daily WHERE day = %s", (start,))
    await conn.execute(
        "INSERT INTO telemetry_daily (device_id, metric, day, count, sum, min, max)"
        " SELECT device_id, metric, %s, sum(count), sum(sum), min(min), max(max)"
        " FROM telemetry_hourly WHERE hour >= %s AND hour < %s GROUP BY device_id, metric",
        (start, start, end),
    )


async def _keep_latest(conn: AsyncConnection[object]) -> None:
    """A new instance learns each series' latest value from the hour; a newer one stays."""
    await conn.execute(
        "INSERT INTO telemetry_latest (device_id, metric, time, value)"
        " SELECT DISTINCT ON (device_id, metric) device_id, metric,"
        " TIMESTAMPTZ 'epoch' + time_us * INTERVAL '1 microsecond', value FROM archive_import"
        " ORDER BY device_id, metric, time_us DESC"
        " ON CONFLICT (device_id, metric) DO UPDATE SET time = EXCLUDED.time,"
        " value = EXCLUDED.value WHERE telemetry_latest.time < EXCLUDED.time"
    )
