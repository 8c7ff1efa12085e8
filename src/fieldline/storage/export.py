"""Raw points out of PostgreSQL as CSV, streamed: `COPY ... TO STDOUT` hands them over in
chunks as the series index yields them (device, metric, time: no sort, no buffering), so
an export of any size costs the API a chunk of memory at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row

HEADER = b"time,device_id,metric,value\n"


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


def points_csv(
    device_ids: Sequence[str], metrics: Sequence[str], start: datetime, end: datetime
) -> sql.Composed:
    """The COPY statement of the points of `device_ids` (of `metrics`, or all) in
    [start, end): times in ISO 8601 UTC to the microsecond, values exact."""
    metric_filter = (
        sql.SQL(" AND metric = ANY({})").format(sql.Literal(list(metrics)))
        if metrics
        else sql.SQL("")
    )
    return sql.SQL(
        "COPY (SELECT to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
        " device_id, metric, value FROM telemetry"
        " WHERE device_id = ANY({devices}){metrics} AND time >= {start} AND time < {end}"
        " ORDER BY device_id, metric, time) TO STDOUT (FORMAT csv)"
    ).format(
        devices=sql.Literal(list(device_ids)),
        metrics=metric_filter,
        start=sql.Literal(start),
        end=sql.Literal(end),
    )


async def stream_csv(
    conn: AsyncConnection[object], statement: sql.Composed
) -> AsyncIterator[bytes]:
    """The header, then the rows as PostgreSQL sends them."""
    yield HEADER
    async with conn.cursor().copy(statement) as copy:
        async for chunk in copy:
            yield bytes(chunk)
