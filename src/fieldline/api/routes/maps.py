"""Maps: where the dashboard's tiles come from, and where devices are.

A device's position is its latest latitude and longitude (domain/positions.py says which
metrics hold them); its track over a range is the same two metrics through /series.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from fieldline.api.deps import Context, DbConn, Viewer
from fieldline.api.errors import ApiError
from fieldline.domain.metrics import applying
from fieldline.domain.positions import PositionMetrics, position_metrics, position_of
from fieldline.storage import export as export_store
from fieldline.storage import fleet as fleet_store
from fieldline.storage import metric_metadata as meta_store

router = APIRouter(prefix="/api/v1", tags=["maps"])

MAX_DEVICES = 10_000


class MapSettings(BaseModel):
    tiles_url: str | None = Field(
        description="Tile server template ({z}/{x}/{y}); null: no tiles, a coordinate grid"
    )
    attribution: str


class DevicePosition(BaseModel):
    device_id: str
    name: str
    device_type: str
    group: str | None
    status: str
    latitude: float
    longitude: float
    time: datetime = Field(description="When the older of the two coordinates was reported")
    latitude_metric: str
    longitude_metric: str


class PositionList(BaseModel):
    items: list[DevicePosition]


@router.get("/map", response_model=MapSettings)
async def map_settings(_: Viewer, context: Context) -> MapSettings:
    """The tile server the dashboard's maps use (FIELDLINE_MAP_TILES_URL)."""
    settings = context.settings
    return MapSettings(
        tiles_url=settings.map_tiles_url or None, attribution=settings.map_attribution
    )


@router.get(
    "/positions",
    response_model=PositionList,
    responses={404: {"description": "not_found: the group does not exist"}},
)
async def positions(
    _: Viewer,
    conn: DbConn,
    context: Context,
    group: Annotated[str | None, Query(max_length=128, description="Its devices only")] = None,
    device_id: Annotated[
        list[str] | None, Query(max_length=MAX_DEVICES, description="Repeat for several")
    ] = None,
) -> Response:
    """The latest position of every device (of a group, or those named) that reported one,
    by device id. Devices without both coordinates are left out."""
    if group is not None and await export_store.devices_of_group(conn, group) is None:
        raise ApiError(404, f"group {group!r} does not exist")
    entries = await meta_store.all_entries(conn)
    by_type: dict[str, PositionMetrics] = {}

    def metrics_of(device_type: str) -> PositionMetrics:
        if device_type not in by_type:
            by_type[device_type] = position_metrics(applying(entries, device_type))
        return by_type[device_type]

    # Every name any type may use: a type without entries uses the common names.
    candidates = {*metrics_of("").names}
    for entry in entries:
        candidates.update(metrics_of(entry.device_type).names)
    cutoff = datetime.now(UTC) - timedelta(seconds=context.settings.online_timeout_seconds)
    placed = await fleet_store.devices_with_latest(
        conn,
        metrics=sorted(candidates),
        group=group,
        device_ids=device_id,
        online_cutoff=cutoff,
    )
    items = []
    for device in placed:
        where = position_of(metrics_of(device.device_type), device.latest)
        if where is not None:
            items.append(
                {
                    "device_id": device.device_id,
                    "name": device.name,
                    "device_type": device.device_type,
                    "group": device.group,
                    "status": device.status,
                    "latitude": where.latitude,
                    "longitude": where.longitude,
                    "time": where.time,
                    "latitude_metric": where.latitude_metric,
                    "longitude_metric": where.longitude_metric,
                }
            )
    # Encoded by orjson, in the shape of PositionList: a thousand devices' models held the
    # API's event loop for about 200 ms while the map page's other answers waited.
    return Response(
        orjson.dumps({"items": items}, option=orjson.OPT_UTC_Z), media_type="application/json"
    )
