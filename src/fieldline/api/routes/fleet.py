"""The fleet overview: status counts, ingest and rejected rates, the devices table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from fieldline.api.context import ApiContext
from fieldline.api.deps import Context, DbConn, Viewer
from fieldline.storage import fleet as fleet_store
from fieldline.storage.fleet import ShownStatus, SortKey, TableFilter
from fieldline.storage.writer import ACTIVITY_BUCKET_SECONDS

router = APIRouter(prefix="/api/v1/fleet", tags=["fleet"])

# The rates are over the last complete buckets of this span; the history covers
# HISTORY_SPAN. The bucket being filled now is left out, or every rate would dip.
RATE_SPAN = timedelta(seconds=3 * ACTIVITY_BUCKET_SECONDS)
HISTORY_SPAN = timedelta(minutes=15)


class StatusCountsOut(BaseModel):
    total: int
    online: int
    offline: int
    never_seen: int
    disabled: int


class ActivityOut(BaseModel):
    time: datetime = Field(description="Start of a 10-second bucket")
    readings: int
    rejected: int


class RatesOut(BaseModel):
    readings_per_second: float
    rejected_per_second: float
    window_seconds: int
    history: list[ActivityOut] = Field(description="The last 15 minutes, oldest first")


class FacetsOut(BaseModel):
    groups: list[str]
    device_types: list[str]
    firmware_versions: list[str]


class FleetSummary(BaseModel):
    devices: StatusCountsOut
    ingest: RatesOut
    facets: FacetsOut


class TableRowOut(BaseModel):
    device_id: str
    name: str
    device_type: str
    group: str | None
    enabled: bool
    status: ShownStatus
    last_seen: datetime | None
    firmware_version: str | None
    battery: float | None
    signal: float | None


class DeviceTable(BaseModel):
    items: list[TableRowOut]
    total: int = Field(description="Devices matching the filters, on all pages")
    offset: int
    limit: int


def _online_cutoff(context: ApiContext, now: datetime) -> datetime:
    return now - timedelta(seconds=context.settings.online_timeout_seconds)


async def summary(conn: fleet_store.Conn, context: ApiContext) -> FleetSummary:
    """The overview's numbers; the dashboard's stream sends the same."""
    now = datetime.now(UTC)
    counts = await fleet_store.status_counts(conn, online_cutoff=_online_cutoff(context, now))
    history = await fleet_store.activity(conn, since=now - HISTORY_SPAN, until=now)
    complete = history[:-1]  # the last bucket is still filling
    recent = complete[-round(RATE_SPAN.total_seconds() / ACTIVITY_BUCKET_SECONDS) :]
    span = len(recent) * ACTIVITY_BUCKET_SECONDS or 1
    facets = await fleet_store.facets(conn)
    return FleetSummary(
        devices=StatusCountsOut.model_validate(counts, from_attributes=True),
        ingest=RatesOut(
            readings_per_second=sum(b.readings for b in recent) / span,
            rejected_per_second=sum(b.rejected for b in recent) / span,
            window_seconds=span,
            history=[ActivityOut.model_validate(b, from_attributes=True) for b in complete],
        ),
        facets=FacetsOut.model_validate(facets, from_attributes=True),
    )


@router.get("/summary", response_model=FleetSummary)
async def fleet_summary(_: Viewer, conn: DbConn, context: Context) -> FleetSummary:
    """Devices by status, readings stored and messages rejected per second, filter values."""
    return await summary(conn, context)


@router.get("/devices", response_model=DeviceTable)
async def device_table(
    _: Viewer,
    conn: DbConn,
    context: Context,
    q: Annotated[
        str | None, Query(max_length=128, description="Part of the device id or name")
    ] = None,
    group: Annotated[str | None, Query(max_length=128)] = None,
    device_type: Annotated[str | None, Query(max_length=128)] = None,
    status: ShownStatus | None = None,
    firmware_version: Annotated[str | None, Query(max_length=128)] = None,
    sort: SortKey = SortKey.DEVICE_ID,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeviceTable:
    """A page of the devices table: sorted, filtered and counted by the database."""
    rows, total = await fleet_store.device_table(
        conn,
        filters=TableFilter(
            text=q or None,
            group=group,
            device_type=device_type,
            status=status,
            firmware_version=firmware_version,
        ),
        sort=sort,
        descending=order == "desc",
        offset=offset,
        limit=limit,
        online_cutoff=_online_cutoff(context, datetime.now(UTC)),
    )
    return DeviceTable(
        items=[TableRowOut.model_validate(row, from_attributes=True) for row in rows],
        total=total,
        offset=offset,
        limit=limit,
    )
