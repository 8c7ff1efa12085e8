"""Export: raw points of devices or a group over any range, as CSV or Parquet, streamed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from fieldline.api.deps import Context, DbConn, Viewer
from fieldline.api.errors import ApiError
from fieldline.api.timeparams import time_range
from fieldline.storage import export as export_store

router = APIRouter(prefix="/api/v1/export", tags=["telemetry"])

MAX_DEVICES = 10_000
PARQUET = "application/vnd.apache.parquet"


@router.get(
    "",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/csv": {}, PARQUET: {}},
            "description": "time,device_id,metric,value,unit: CSV, or a Parquet file",
        },
        404: {"description": "not_found: a device or the group does not exist"},
    },
)
async def export_points(
    _: Viewer,
    conn: DbConn,
    context: Context,
    device_id: Annotated[list[str] | None, Query(description="Repeat for several")] = None,
    group: Annotated[str | None, Query(max_length=128, description="All its devices")] = None,
    metric: Annotated[
        list[str] | None, Query(description="Repeat for several; default all")
    ] = None,
    start: Annotated[
        str | None, Query(description="ISO 8601 or epoch seconds; default 24 h before end")
    ] = None,
    end: Annotated[str | None, Query(description="ISO 8601 or epoch seconds; default now")] = None,
    format: Annotated[
        export_store.Format, Query(description="csv, or parquet (zstd, times in UTC to the µs)")
    ] = "csv",
) -> StreamingResponse:
    """Raw points with their units (`time,device_id,metric,value,unit`, a row each, by
    device, metric and time; the unit empty where the metric has none) as CSV or Parquet,
    streamed as the database yields them, so any range exports in bounded memory."""
    devices = sorted(set(device_id or []))
    if group is not None:
        members = await export_store.devices_of_group(conn, group)
        if members is None:
            raise ApiError(404, f"group {group!r} does not exist")
        devices = sorted({*devices, *members})
    elif not devices:
        raise ApiError(422, "name the devices to export: device_id (repeatable) or group")
    if len(devices) > MAX_DEVICES:
        raise ApiError(422, f"at most {MAX_DEVICES} devices in one export")
    missing = await export_store.missing_devices(conn, devices)
    if missing:
        raise ApiError(404, f"no such device: {', '.join(missing[:5])}")
    start_at, end_at = time_range(start, end)
    statement = export_store.points_copy(
        devices, sorted(set(metric or [])), start_at, end_at, format=format
    )
    stream = export_store.stream_parquet if format == "parquet" else export_store.stream_csv
    pool = context.pool

    async def body() -> AsyncIterator[bytes]:
        # A connection of its own for as long as the client reads: the request's own goes
        # back to the pool when this function returns, before the body is sent.
        async with pool.connection() as own:
            async for chunk in stream(own, statement):
                yield chunk

    named = group or (devices[0] if len(devices) == 1 else "devices")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", named)  # a header's quoted string stays one
    filename = f"{name}-{start_at:%Y%m%dT%H%M%SZ}-{end_at:%Y%m%dT%H%M%SZ}.{format}"
    return StreamingResponse(
        body(),
        media_type=PARQUET if format == "parquet" else "text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
