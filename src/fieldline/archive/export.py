"""An hour of raw points, or a day's aggregates, from PostgreSQL into a Parquet file.

PostgreSQL sorts the rows and streams them as CSV (COPY, its fastest way out);
pyarrow parses the CSV in C++ and writes row groups as they come, so memory stays
bounded by a row group whatever the hour holds. Times leave as integer microseconds,
exact, and values in PostgreSQL's shortest exact text form, so a value read back from
the archive is the stored double bit for bit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import AsyncConnection

POINTS_SCHEMA = pa.schema(
    [
        ("device_id", pa.string()),
        ("metric", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("value", pa.float64()),
    ]
)
DAILY_SCHEMA = pa.schema(
    [
        ("device_id", pa.string()),
        ("metric", pa.string()),
        ("day", pa.date32()),
        ("count", pa.int64()),
        ("sum", pa.float64()),
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("avg", pa.float64()),
    ]
)
# Large enough for good compression and few footers, small enough to read a device's
# slice of an hour without the rest (readers skip row groups by their statistics).
ROW_GROUP_ROWS = 256 * 1024

_POINTS_SQL = (
    "COPY (SELECT device_id, metric, (extract(epoch FROM time) * 1000000)::int8, value"
    " FROM telemetry WHERE time >= {start} AND time < {end}"
    " ORDER BY device_id, time, metric) TO STDOUT (FORMAT csv)"
)
_DAILY_SQL = (
    "COPY (SELECT device_id, metric, (day AT TIME ZONE 'UTC')::date, count, sum, min, max,"
    " sum / count FROM telemetry_daily WHERE day = {start}"
    " ORDER BY device_id, metric) TO STDOUT (FORMAT csv)"
)


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    rows: int
    bytes: int
    sha256: str


async def export_points(
    conn: AsyncConnection[object], hour: datetime, csv: Path, parquet: Path
) -> Written:
    """Write the raw points of the hour starting at `hour` (inside the caller's snapshot)."""
    await _copy_out(conn, _POINTS_SQL, hour, hour + timedelta(hours=1), csv)
    return _to_parquet(csv, parquet, POINTS_SCHEMA, time_column="time")


async def export_daily(
    conn: AsyncConnection[object], day: datetime, csv: Path, parquet: Path
) -> Written:
    """Write the daily rollups of the UTC day starting at `day`."""
    await _copy_out(conn, _DAILY_SQL, day, day + timedelta(days=1), csv)
    return _to_parquet(csv, parquet, DAILY_SCHEMA, time_column=None)


async def _copy_out(
    conn: AsyncConnection[object], sql: str, start: datetime, end: datetime, target: Path
) -> None:
    # COPY takes no parameters: the times go in as quoted literals of datetimes.
    statement = sql.format(start=_literal(start), end=_literal(end))
    cursor = conn.cursor()
    with target.open("wb") as out:
        async with cursor.copy(statement.encode()) as copy:
            async for chunk in copy:
                out.write(chunk)


def _literal(moment: datetime) -> str:
    return f"'{moment.isoformat()}'::timestamptz"


def _to_parquet(csv: Path, parquet: Path, schema: pa.Schema, time_column: str | None) -> Written:
    # The CSV's time column is integer microseconds; everything else is as the schema says.
    read_types = {
        field.name: (pa.int64() if field.name == time_column else field.type) for field in schema
    }
    rows = 0
    with pq.ParquetWriter(
        parquet,
        schema,
        compression="zstd",
        use_dictionary=["device_id", "metric"],
        write_statistics=True,
    ) as writer:
        if csv.stat().st_size:
            reader = pacsv.open_csv(
                csv,
                read_options=pacsv.ReadOptions(column_names=schema.names, block_size=8 << 20),
                convert_options=pacsv.ConvertOptions(
                    column_types=read_types, quoted_strings_can_be_null=False
                ),
            )
            pending: list[pa.RecordBatch] = []
            pending_rows = 0
            for read in reader:
                columns = [
                    read.column(i).cast(field.type) if field.name == time_column else read.column(i)
                    for i, field in enumerate(schema)
                ]
                batch = pa.RecordBatch.from_arrays(columns, schema=schema)
                pending.append(batch)
                pending_rows += batch.num_rows
                if pending_rows >= ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(pending, schema), ROW_GROUP_ROWS)
                    rows += pending_rows
                    pending, pending_rows = [], 0
            if pending:
                writer.write_table(pa.Table.from_batches(pending, schema), ROW_GROUP_ROWS)
                rows += pending_rows
    return Written(parquet, rows, parquet.stat().st_size, sha256_of(parquet))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
