"""Raw points out of PostgreSQL, streamed as CSV or Parquet: `COPY ... TO STDOUT` hands
them over a row at a time as the series index yields them (device, metric, time: no
sort), and they leave in chunks of a bounded size, so an export of any size costs the
API a chunk (CSV) or a row group (Parquet) of memory at a time.

Each point carries its metric's unit, joined in the same statement from the metadata
of the device's type (else of every type, `*`), as `domain.metrics.applying` chooses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

Format = Literal["csv", "parquet"]

COLUMNS = ("time", "device_id", "metric", "value", "unit")
HEADER = (",".join(COLUMNS) + "\n").encode()
CSV_CHUNK_BYTES = 64 * 1024  # one send per chunk, not per row
# A row group is what the API holds of a Parquet export at a time (about 25 MB of CSV
# and its columns); large enough to compress well.
ROW_GROUP_ROWS = 256 * 1024

# CSV: ISO 8601 in UTC to the microsecond. Parquet: integer microseconds, exact, turned
# into timestamp[us, UTC] without parsing.
_TIME = {
    "csv": "to_char(t.time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    "parquet": "(extract(epoch FROM t.time) * 1000000)::int8",
}
# No unit is NULL, which COPY writes as nothing (an empty text would be `""`) and the
# Parquet reader takes as an empty text. The metadata tables are small: PostgreSQL
# memoizes the lookups per (type, metric) and keeps the index's order, so the join adds
# neither a sort nor memory.
_POINTS = (
    "COPY (SELECT {time}, t.device_id, t.metric, t.value,"
    " nullif(CASE WHEN own.metric IS NULL THEN fallback.unit ELSE own.unit END, '')"
    " FROM telemetry t JOIN devices d ON d.device_id = t.device_id"
    " LEFT JOIN metric_metadata own"
    " ON own.device_type = d.device_type AND own.metric = t.metric"
    " LEFT JOIN metric_metadata fallback"
    " ON fallback.device_type = '*' AND fallback.metric = t.metric"
    " WHERE t.device_id = ANY({devices}){metrics} AND t.time >= {start} AND t.time < {end}"
    " ORDER BY t.device_id, t.metric, t.time) TO STDOUT (FORMAT csv)"
)


async def devices_of_group(conn: AsyncConnection[object], group: str) -> list[str] | None:
    """The group's devices, sorted; None when there is no such group."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute("SELECT id FROM groups WHERE name = %s", (group,))
    found = await cursor.fetchone()
    if found is None:
        return None
    await cursor.execute(
        "SELECT device_id FROM devices WHERE group_id = %s ORDER BY device_id", (found[0],)
    )
    return [row[0] for row in await cursor.fetchall()]


async def missing_devices(conn: AsyncConnection[object], device_ids: Sequence[str]) -> list[str]:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT d FROM unnest(%s::text[]) AS d WHERE NOT EXISTS"
        " (SELECT 1 FROM devices WHERE device_id = d) ORDER BY d",
        (list(device_ids),),
    )
    return [row[0] for row in await cursor.fetchall()]


def points_copy(
    device_ids: Sequence[str],
    metrics: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    format: Format,
) -> sql.Composed:
    """The COPY statement of the points of `device_ids` (of `metrics`, or all) in
    [start, end) with their units, by device, metric and time; values exact (PostgreSQL's
    shortest text that reads back as the same double)."""
    metric_filter = (
        sql.SQL(" AND t.metric = ANY({})").format(sql.Literal(list(metrics)))
        if metrics
        else sql.SQL("")
    )
    return sql.SQL(_POINTS).format(
        time=sql.SQL(_TIME[format]),
        devices=sql.Literal(list(device_ids)),
        metrics=metric_filter,
        start=sql.Literal(start),
        end=sql.Literal(end),
    )


async def stream_csv(
    conn: AsyncConnection[object], statement: sql.Composed
) -> AsyncIterator[bytes]:
    """The header, then the rows as PostgreSQL sends them, a chunk at a time."""
    chunk = bytearray(HEADER)
    async with conn.cursor().copy(statement) as copy:
        async for row in copy:
            chunk += row
            if len(chunk) >= CSV_CHUNK_BYTES:
                yield bytes(chunk)
                chunk.clear()
    yield bytes(chunk)


async def stream_parquet(
    conn: AsyncConnection[object], statement: sql.Composed
) -> AsyncIterator[bytes]:
    """A zstd Parquet file, sent as each row group is written: PostgreSQL's CSV of a row
    group parsed by pyarrow (in C++, off the event loop) into typed columns."""
    import pyarrow.parquet as pq

    sink = _Drain()
    writer = pq.ParquetWriter(
        sink,
        _schema(),
        compression="zstd",
        use_dictionary=["device_id", "metric", "unit"],
        write_statistics=True,
    )
    # A row group is parsed and compressed in a thread while the next one is read.
    writing: asyncio.Future[None] | None = None
    try:
        group, rows = bytearray(), 0
        async with conn.cursor().copy(statement) as copy:
            async for row in copy:
                group += row
                rows += 1
                if rows == ROW_GROUP_ROWS:
                    if writing is not None:
                        await writing
                        yield sink.take()
                    writing = asyncio.ensure_future(
                        asyncio.to_thread(_write_group, writer, bytes(group))
                    )
                    group.clear()
                    rows = 0
        if writing is not None:
            await writing
            writing = None
        if rows:
            await asyncio.to_thread(_write_group, writer, bytes(group))
    finally:
        if writing is not None:  # the client went away: let the thread finish first
            await asyncio.wait([writing])
        await asyncio.to_thread(writer.close)
    yield sink.take()


def _schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("time", pa.timestamp("us", tz="UTC")),
            ("device_id", pa.string()),
            ("metric", pa.string()),
            ("value", pa.float64()),
            ("unit", pa.string()),
        ]
    )


def _write_group(writer: pq.ParquetWriter, csv: bytes) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    schema = _schema()
    read_types = {f.name: pa.int64() if f.name == "time" else f.type for f in schema}
    table = pacsv.read_csv(
        pa.BufferReader(csv),
        read_options=pacsv.ReadOptions(column_names=schema.names),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=read_types,
            quoted_strings_can_be_null=False,
            strings_can_be_null=False,
        ),
    )
    table = table.set_column(0, schema.field("time"), table.column("time").cast(schema[0].type))
    writer.write_table(table, row_group_size=ROW_GROUP_ROWS)


class _Drain:
    """The file the Parquet writer writes to, emptied as each row group is sent."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def take(self) -> bytes:
        taken = b"".join(self._parts)
        self._parts.clear()
        return taken
