"""Telemetry queries: latest values, raw points and time buckets."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from fieldline.api.deps import Context, DbConn, Viewer
from fieldline.api.errors import ApiError
from fieldline.api.latest import MirrorUnavailable, read_encoded
from fieldline.api.paging import Cursor
from fieldline.api.routes.devices import DeviceId
from fieldline.api.timeparams import bucket_width, time_range
from fieldline.storage import devices as device_store
from fieldline.storage import telemetry as telemetry_store
from fieldline.storage.telemetry import Aggregate, LatestValue

router = APIRouter(prefix="/api/v1", tags=["telemetry"])


class MetricValue(BaseModel):
    value: float
    time: datetime


class DeviceLatest(BaseModel):
    device_id: str
    metrics: dict[str, MetricValue]


class AttributeValue(BaseModel):
    value: str
    time: datetime


class DeviceAttributes(BaseModel):
    device_id: str
    attributes: dict[str, AttributeValue]


class LatestList(BaseModel):
    items: list[DeviceLatest]
    next_cursor: str | None


class PointOut(BaseModel):
    time: datetime
    value: float


class Series(BaseModel):
    device_id: str
    metric: str
    start: datetime
    end: datetime
    bucket: str | None
    agg: Aggregate | None
    points: list[PointOut]
    next_cursor: str | None = None


def _metrics(values: list[LatestValue]) -> dict[str, MetricValue]:
    return {v.metric: MetricValue(value=v.value, time=v.time) for v in values}


@router.get("/devices/{device_id}/telemetry/latest", response_model=DeviceLatest)
async def device_latest(device_id: DeviceId, _: Viewer, conn: DbConn) -> DeviceLatest:
    await device_store.get_device(conn, device_id)
    values = await telemetry_store.latest_values(conn, [device_id])
    return DeviceLatest(device_id=device_id, metrics=_metrics(values))


@router.get("/devices/{device_id}/attributes", response_model=DeviceAttributes)
async def device_attributes(device_id: DeviceId, _: Viewer, conn: DbConn) -> DeviceAttributes:
    """The latest string values the device reported (firmware, mode, status details)."""
    await device_store.get_device(conn, device_id)
    stored = await telemetry_store.device_attributes(conn, device_id)
    return DeviceAttributes(
        device_id=device_id,
        attributes={k: AttributeValue(value=v, time=t) for k, (v, t) in stored.items()},
    )


@router.get("/telemetry/latest", response_model=LatestList)
async def fleet_latest(
    _: Viewer,
    context: Context,
    conn: DbConn,
    group: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: Cursor = None,
) -> Response:
    """Latest metrics of many devices (of one group when `group` is given).

    Each device's item comes pre-encoded from the API's mirror of the latest values
    (api/latest.py), current as of the request; the answer has the shape of
    `LatestList` and its time format (ISO 8601, `Z`).
    """
    page = await telemetry_store.fleet_page(conn, group=group, limit=limit, cursor=cursor)
    try:
        items = await context.latest.encoded(conn, page.items)
    except MirrorUnavailable:
        items = await read_encoded(conn, page.items)
    if items:  # one copy of the items into the body: they can weigh megabytes
        items[0] = b'{"items":[' + items[0]
        items[-1] += b'],"next_cursor":' + orjson.dumps(page.next_cursor) + b"}"
        body = b",".join(items)
    else:
        body = b'{"items":[],"next_cursor":null}'
    return Response(body, media_type="application/json")


@router.get("/devices/{device_id}/telemetry", response_model=Series)
async def device_telemetry(
    device_id: DeviceId,
    _: Viewer,
    conn: DbConn,
    metric: Annotated[str, Query(min_length=1, max_length=128)],
    start: Annotated[
        str | None, Query(description="ISO 8601 or epoch seconds; default 24 h before end")
    ] = None,
    end: Annotated[str | None, Query(description="ISO 8601 or epoch seconds; default now")] = None,
    bucket: Annotated[str | None, Query(description="e.g. 30s, 5m, 1h, 1d")] = None,
    agg: Aggregate | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="raw points per page")] = 1000,
    cursor: Cursor = None,
) -> Series:
    """Raw points, or with `bucket` one aggregated point per time bucket (`agg`, default avg)."""
    await device_store.get_device(conn, device_id)
    start_at, end_at = time_range(start, end)
    if bucket is None:
        if agg is not None:
            raise ApiError(422, "agg needs a bucket")
        page = await telemetry_store.raw_points(
            conn,
            device_id=device_id,
            metric=metric,
            start=start_at,
            end=end_at,
            limit=limit,
            cursor=cursor,
        )
        return Series(
            device_id=device_id,
            metric=metric,
            start=start_at,
            end=end_at,
            bucket=None,
            agg=None,
            points=[PointOut(time=p.time, value=p.value) for p in page.items],
            next_cursor=page.next_cursor,
        )
    width = bucket_width(bucket, start_at, end_at)
    aggregate = agg or Aggregate.AVG
    points = await telemetry_store.bucketed_points(
        conn,
        device_id=device_id,
        metric=metric,
        start=start_at,
        end=end_at,
        bucket=width,
        aggregate=aggregate,
    )
    return Series(
        device_id=device_id,
        metric=metric,
        start=start_at,
        end=end_at,
        bucket=bucket,
        agg=aggregate,
        points=[PointOut(time=p.time, value=p.value) for p in points],
    )


MAX_SERIES = 200


class SeriesList(BaseModel):
    items: list[Series]


@router.get(
    "/series",
    response_model=SeriesList,
    responses={404: {"description": "not_found: a device does not exist"}},
)
async def many_series(
    _: Viewer,
    conn: DbConn,
    device_id: Annotated[list[str], Query(min_length=1, description="Repeat for several")],
    metric: Annotated[list[str], Query(min_length=1, description="Repeat for several")],
    bucket: Annotated[str, Query(description="e.g. 30s, 5m, 1h, 1d")],
    start: Annotated[
        str | None, Query(description="ISO 8601 or epoch seconds; default 24 h before end")
    ] = None,
    end: Annotated[str | None, Query(description="ISO 8601 or epoch seconds; default now")] = None,
    agg: Aggregate | None = None,
) -> Response:
    """Bucketed series of every device and metric named (one metric over many devices, or
    many metrics of one device), in one answer: the same points as a call per series, in
    the order asked (devices, then metrics)."""
    devices = list(dict.fromkeys(device_id))
    metrics = list(dict.fromkeys(metric))
    if len(devices) * len(metrics) > MAX_SERIES:
        raise ApiError(422, f"at most {MAX_SERIES} series (devices × metrics) in one call")
    for name in devices:
        await device_store.get_device(conn, name)  # 404 for one that does not exist
    start_at, end_at = time_range(start, end)
    width = bucket_width(bucket, start_at, end_at)
    aggregate = agg or Aggregate.AVG
    # A query per metric for all the devices, and the answer encoded by orjson: 50 devices'
    # day of 5 min buckets (14,400 points) as models took most of the request's time.
    found = {
        each: await telemetry_store.bucketed_many(
            conn,
            device_ids=devices,
            metric=each,
            start=start_at,
            end=end_at,
            bucket=width,
            aggregate=aggregate,
        )
        for each in metrics
    }
    items = [
        {
            "device_id": name,
            "metric": each,
            "start": start_at,
            "end": end_at,
            "bucket": bucket,
            "agg": aggregate.value,
            "points": [{"time": p.time, "value": p.value} for p in found[each][name]],
            "next_cursor": None,
        }
        for name in devices
        for each in metrics
    ]
    return Response(
        orjson.dumps({"items": items}, option=orjson.OPT_UTC_Z), media_type="application/json"
    )
