"""Groups: the sites, farms or depots devices belong to.

A rename keeps everything that belongs to the group: its devices, its configuration and
that configuration's history, provisioning keys, alert rules and silences naming it. No
device gets a new configuration version: what each receives does not change. A deletion
keeps the devices, in no group; each whose configuration included the group's object
gets a new version without it, delivered as a change of the group's configuration is.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import AfterValidator, BaseModel, Field

from fieldline.api.deps import Context, DbConn, Operator, Viewer
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.domain.devices import Group
from fieldline.downlink.config import deliver
from fieldline.storage import audit as audit_store
from fieldline.storage import devices as device_store
from fieldline.storage import groups as group_store

router = APIRouter(prefix="/api/v1/groups", tags=["groups"])

GroupName = Annotated[str, Path(min_length=1, max_length=128)]

_EXISTS: dict[int | str, dict[str, Any]] = {
    409: {"description": "conflict: a group with this name exists"}
}


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _known_zone(name: str | None) -> str | None:
    if name is not None and name not in _time_zones():
        raise ValueError(f"{name!r} is not an IANA time zone name (such as Europe/Berlin)")
    return name


TimeZone = Annotated[
    str | None,
    Field(max_length=64, description="An IANA time zone name, e.g. Europe/Berlin; null: none."),
    AfterValidator(_known_zone),
]


class GroupOut(BaseModel):
    id: int
    name: str
    description: str
    timezone: str | None = Field(description="The group's IANA time zone; null: none set.")
    created_at: datetime

    @classmethod
    def of(cls, group: Group) -> GroupOut:
        return cls.model_validate(group, from_attributes=True)


class GroupDetailOut(GroupOut):
    device_count: int


class GroupCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    description: str = Field("", max_length=2000)
    timezone: TimeZone = None


class GroupPatch(BaseModel):
    name: str | None = Field(
        None, min_length=1, max_length=128, description="A new name; devices keep the group."
    )
    description: str | None = Field(None, max_length=2000)
    timezone: TimeZone = None


class GroupDeleted(BaseModel):
    name: str
    devices_ungrouped: int = Field(description="Devices that were in the group; now in none.")
    devices_versioned: int = Field(
        description="Of those, devices whose configuration changed (it had the group's part)."
    )
    delivery_pending: int = Field(description="Of those, how many are not published yet.")


class GroupList(BaseModel):
    items: list[GroupOut]
    next_cursor: str | None


@router.get("", response_model=GroupList)
async def list_groups(
    _: Viewer, conn: DbConn, limit: Limit = 100, cursor: Cursor = None
) -> GroupList:
    page = await device_store.list_groups(conn, limit=limit, cursor=cursor)
    return GroupList(items=[GroupOut.of(g) for g in page.items], next_cursor=page.next_cursor)


@router.post("", status_code=201, response_model=GroupOut, responses=_EXISTS)
async def create_group(body: GroupCreate, user: Operator, conn: DbConn) -> GroupOut:
    async with conn.transaction():
        group = await device_store.create_group(
            conn, name=body.name, description=body.description, timezone=body.timezone
        )
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="group.create",
            target_type="group",
            target_id=group.name,
        )
    return GroupOut.of(group)


@router.get("/{name}", response_model=GroupDetailOut)
async def get_group(name: GroupName, _: Viewer, conn: DbConn) -> GroupDetailOut:
    found = await group_store.get_group(conn, name)
    return GroupDetailOut(**GroupOut.of(found.group).model_dump(), device_count=found.device_count)


@router.patch("/{name}", response_model=GroupOut, responses=_EXISTS)
async def update_group(name: GroupName, body: GroupPatch, user: Operator, conn: DbConn) -> GroupOut:
    """Rename a group, or change its description or time zone (null removes it).

    Its devices, configuration and history, provisioning keys, and the alert rules and
    silences that name it follow a new name; no device's configuration changes."""
    changes = body.model_dump(exclude_unset=True)
    for field in ("name", "description"):
        if field in changes and changes[field] is None:
            raise ApiError(422, f"{field} cannot be null")
    if not changes:
        return GroupOut.of((await group_store.get_group(conn, name)).group)
    renamed = {"renamed_from": name} if changes.get("name", name) != name else {}
    async with conn.transaction():
        group = await group_store.update_group(conn, name, changes)
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="group.update",
            target_type="group",
            target_id=group.name,
            detail={"changes": sorted(changes), **renamed},
        )
    return GroupOut.of(group)


@router.delete(
    "/{name}",
    response_model=GroupDeleted,
    responses={
        409: {"description": "conflict: a provisioning key still registers devices into it"}
    },
)
async def delete_group(
    name: GroupName, user: Operator, conn: DbConn, context: Context
) -> GroupDeleted:
    """Delete a group. Its devices stay, in no group; its configuration is removed from
    theirs, as a new version each, published at once. Alert rules and silences naming it
    then cover no device (until a group of that name exists again)."""
    actor = audit_store.user_actor(user.username)
    async with conn.transaction():
        deletion = await group_store.delete_group(conn, name, actor=actor)
        await audit_store.record(
            conn,
            actor=actor,
            action="group.delete",
            target_type="group",
            target_id=name,
            detail={
                "devices_ungrouped": len(deletion.devices),
                "devices_versioned": len(deletion.versioned),
            },
        )
    delivery = await deliver(
        conn,
        context.publisher,
        context.settings.topics,
        device_ids=[v.device_id for v in deletion.versioned],
    )
    return GroupDeleted(
        name=name,
        devices_ungrouped=len(deletion.devices),
        devices_versioned=len(deletion.versioned),
        delivery_pending=max(len(deletion.versioned) - delivery.published, 0),
    )
