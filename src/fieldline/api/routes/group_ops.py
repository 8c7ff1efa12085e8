"""A group as one thing: its trend across devices, commands to all (or some) of its
devices, and enabling or disabling many devices at once."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from fieldline.api.deps import Context, DbConn, Operator, Viewer
from fieldline.api.errors import ApiError
from fieldline.api.routes.commands import CommandCreate, CommandOut
from fieldline.api.routes.devices import DeviceOut
from fieldline.api.timeparams import bucket_width, time_range
from fieldline.devices import registry
from fieldline.devices.commands import create_command
from fieldline.devices.errors import DeviceDisabledError, InvalidCommandError
from fieldline.storage import audit as audit_store
from fieldline.storage import export as export_store
from fieldline.storage import telemetry as telemetry_store
from fieldline.storage.errors import NotFoundError

router = APIRouter(tags=["groups"])

GroupName = Annotated[str, Path(min_length=1, max_length=128)]
MAX_SELECTION = 10_000
_NO_GROUP: dict[int | str, dict[str, Any]] = {
    404: {"description": "not_found: the group does not exist"}
}


class TrendPointOut(BaseModel):
    time: datetime
    avg: float
    min: float
    max: float
    count: int = Field(description="Readings in the bucket, all devices together")
    devices: int = Field(description="Devices with a reading in the bucket")


class GroupTrend(BaseModel):
    group: str
    metric: str
    start: datetime
    end: datetime
    bucket: str
    devices: int = Field(description="Devices in the group")
    points: list[TrendPointOut]


class GroupCommand(CommandCreate):
    device_ids: list[str] | None = Field(
        None,
        max_length=MAX_SELECTION,
        description="Only these devices of the group; default all of them",
    )


class Refusal(BaseModel):
    device_id: str
    reason: str


class GroupCommandSent(BaseModel):
    items: list[CommandOut] = Field(description="A command per device, as sent")
    refused: list[Refusal] = Field(description="Devices that were not sent it, and why")


class BulkEnable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_ids: list[str] = Field(min_length=1, max_length=MAX_SELECTION)
    enabled: bool = Field(description="false disables each device at once")


class BulkEnabled(BaseModel):
    items: list[DeviceOut] = Field(description="Each device as it is now")
    missing: list[str] = Field(description="Ids of no device; nothing was done for them")


async def _members(conn: DbConn, name: str) -> list[str]:
    members = await export_store.devices_of_group(conn, name)
    if members is None:
        raise ApiError(404, f"group {name!r} does not exist")
    return members


@router.get("/api/v1/groups/{name}/trend", response_model=GroupTrend, responses=_NO_GROUP)
async def group_trend(
    name: GroupName,
    _: Viewer,
    conn: DbConn,
    metric: Annotated[str, Query(min_length=1, max_length=128)],
    bucket: Annotated[str, Query(description="e.g. 30s, 5m, 1h, 1d")],
    start: Annotated[
        str | None, Query(description="ISO 8601 or epoch seconds; default 24 h before end")
    ] = None,
    end: Annotated[str | None, Query(description="ISO 8601 or epoch seconds; default now")] = None,
) -> GroupTrend:
    """The metric across the group's devices, per bucket: mean of all their readings,
    lowest, highest, and how many devices reported."""
    members = await _members(conn, name)
    start_at, end_at = time_range(start, end)
    width = bucket_width(bucket, start_at, end_at)
    points = await telemetry_store.trend_points(
        conn, device_ids=members, metric=metric, start=start_at, end=end_at, bucket=width
    )
    return GroupTrend(
        group=name,
        metric=metric,
        start=start_at,
        end=end_at,
        bucket=bucket,
        devices=len(members),
        points=[TrendPointOut.model_validate(p, from_attributes=True) for p in points],
    )


@router.post(
    "/api/v1/groups/{name}/commands",
    status_code=201,
    response_model=GroupCommandSent,
    responses={
        **_NO_GROUP,
        422: {"description": "invalid command, or a selected device not in the group"},
    },
)
async def send_group_command(
    name: GroupName, body: GroupCommand, user: Operator, conn: DbConn, context: Context
) -> GroupCommandSent:
    """The same command to every device of the group (or the selected ones): sent at once
    to those online, when next online to the others. Disabled devices are refused."""
    members = await _members(conn, name)
    targets = members
    if body.device_ids is not None:
        outside = sorted(set(body.device_ids) - set(members))
        if outside:
            raise ApiError(422, f"not in group {name!r}: {', '.join(outside[:5])}")
        targets = sorted(set(body.device_ids))
    settings = context.settings
    sent: list[CommandOut] = []
    refused: list[Refusal] = []
    for device_id in targets:
        try:
            command = await create_command(
                conn,
                publisher=context.publisher,
                topics=settings.topics,
                actor=audit_store.user_actor(user.username),
                device_id=device_id,
                name=body.name,
                params=body.params,
                timeout_seconds=body.timeout_seconds,
                max_timeout_seconds=settings.command_timeout_seconds,
                online_timeout=timedelta(seconds=settings.online_timeout_seconds),
            )
        except InvalidCommandError as exc:  # the same for every device: say it once
            raise ApiError(422, str(exc)) from exc
        except DeviceDisabledError:
            refused.append(Refusal(device_id=device_id, reason="disabled"))
        except NotFoundError:  # deleted since the group was read
            refused.append(Refusal(device_id=device_id, reason="deleted"))
        else:
            sent.append(CommandOut.of(command))
    return GroupCommandSent(items=sent, refused=refused)


@router.post(
    "/api/v1/devices/enabled",
    response_model=BulkEnabled,
    responses={
        503: {
            "description": "broker_unavailable: the broker could not be updated for a device;"
            " it is unchanged, the devices before it (in id order) are changed"
        }
    },
)
async def enable_devices(
    body: BulkEnable, user: Operator, conn: DbConn, context: Context
) -> BulkEnabled:
    """Enable or disable many devices (a group's, or a selection) at once: each exactly as
    PATCH /devices/{id} with `enabled` does (audited, at the broker at once, a disabled
    device's session dropped)."""
    wanted = sorted(set(body.device_ids))
    missing = await export_store.missing_devices(conn, wanted)
    changed = []
    for device_id in wanted:
        if device_id in missing:
            continue
        try:
            device = await registry.update_device(
                conn,
                broker=context.broker,
                publisher=context.publisher,
                topics=context.settings.topics,
                actor=audit_store.user_actor(user.username),
                device_id=device_id,
                changes={"enabled": body.enabled},
            )
        except NotFoundError:  # deleted meanwhile
            missing.append(device_id)
            continue
        changed.append(DeviceOut.of(device, context))
    return BulkEnabled(items=changed, missing=sorted(missing))
