"""Desired configuration per group and per device (a device twin), its versions and history.

A change is stored (and audited) in one transaction, then published retained
on the device's config topic; what the broker did not acknowledge is
`delivery_pending`, and the worker publishes it in its next round.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from psycopg import AsyncConnection
from pydantic import BaseModel, Field

from fieldline.api.context import ApiContext
from fieldline.api.deps import Context, DbConn, Operator, Viewer
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.api.routes.devices import DeviceId
from fieldline.domain.config import (
    MAX_CONFIG_BYTES,
    ConfigChange,
    DeviceConfig,
    GroupConfig,
    JsonObject,
    config_problem,
)
from fieldline.domain.users import User
from fieldline.downlink.config import deliver
from fieldline.storage import audit as audit_store
from fieldline.storage import config as config_store
from fieldline.storage.config import ConfigTooLargeError
from fieldline.storage.db import Row

router = APIRouter(prefix="/api/v1", tags=["configuration"])

GroupName = Annotated[str, Path(min_length=1, max_length=128)]


class ConfigBody(BaseModel):
    config: dict[str, Any] = Field(
        description=f"A JSON object of at most {MAX_CONFIG_BYTES} bytes serialized."
    )


class DeviceConfigOut(BaseModel):
    device_id: str
    group_name: str | None
    desired: dict[str, Any] = Field(description="The device's own object.")
    group: dict[str, Any] | None = Field(
        description="The group's object ({} when it has none); null when the device has no group."
    )
    effective: dict[str, Any] = Field(
        description="The group's object with the device's merged over it: what `version` is."
    )
    version: int = Field(description="Grows with each change of `effective`; 0: never set.")
    published_version: int | None = Field(description="Newest version the broker acknowledged.")
    delivery_pending: bool = Field(description="`version` is not published yet; it will be.")
    reported_version: int | None = Field(description="`config_version` of the device's status.")
    reported_at: datetime | None
    in_sync: bool = Field(description="The device reported the current version.")

    @classmethod
    def of(cls, state: DeviceConfig) -> DeviceConfigOut:
        return cls(
            device_id=state.device_id,
            group_name=state.group,
            desired=state.own,
            group=state.group_config,
            effective=state.effective,
            version=state.version,
            published_version=state.published_version,
            delivery_pending=state.delivery_pending,
            reported_version=state.reported_version,
            reported_at=state.reported_at,
            in_sync=state.in_sync,
        )


class GroupConfigOut(BaseModel):
    group: str
    config: dict[str, Any]
    version: int = Field(description="Grows with each change of the group's object; 0: never set.")
    updated_at: datetime | None

    @classmethod
    def of(cls, group: GroupConfig) -> GroupConfigOut:
        return cls(
            group=group.group,
            config=group.config,
            version=group.version,
            updated_at=group.updated_at,
        )


class GroupConfigChanged(GroupConfigOut):
    devices_versioned: int = Field(description="Devices whose effective configuration changed.")
    delivery_pending: int = Field(description="Of those, how many are not published yet.")


class ConfigChangeOut(BaseModel):
    time: datetime
    actor: str
    scope: str = Field(description="group, device, or membership (the device's group changed).")
    target: str | None = Field(description="Group name or device id; for membership the group.")
    config: dict[str, Any] | None = Field(description="The object set at that scope.")
    version: int | None = Field(
        description="The version it gave (the device's, or in a group's history the group's); "
        "null when the device's effective configuration stayed the same."
    )
    devices_versioned: int

    @classmethod
    def of(cls, change: ConfigChange) -> ConfigChangeOut:
        return cls(
            time=change.time,
            actor=change.actor,
            scope=change.scope.value,
            target=change.target,
            config=change.config,
            version=change.version,
            devices_versioned=change.devices_versioned,
        )


class ConfigHistory(BaseModel):
    items: list[ConfigChangeOut]
    next_cursor: str | None


def _checked(config: JsonObject) -> JsonObject:
    problem = config_problem(config)
    if problem is not None:
        raise ApiError(422, f"config: {problem}")
    return config


async def _change_device(
    conn: AsyncConnection[Row],
    context: ApiContext,
    user: User,
    device_id: str,
    config: JsonObject,
    *,
    patch: bool,
) -> DeviceConfigOut:
    actor = audit_store.user_actor(user.username)
    try:
        async with conn.transaction():
            versioned = await config_store.set_device_config(
                conn,
                device_id,
                _checked(config),
                actor=actor,
                patch=patch,
                max_effective_bytes=MAX_CONFIG_BYTES,
            )
            await audit_store.record(
                conn,
                actor=actor,
                action="config.update",
                target_type="device",
                target_id=device_id,
                detail={"version": versioned.version if versioned else None},
            )
    except ConfigTooLargeError as exc:
        raise ApiError(422, f"config: {exc}") from exc
    # Also what an earlier change left pending.
    await deliver(conn, context.publisher, context.settings.topics, device_ids=[device_id])
    return DeviceConfigOut.of(await config_store.get_device_config(conn, device_id))


@router.get("/devices/{device_id}/config", response_model=DeviceConfigOut)
async def get_device_config(device_id: DeviceId, _: Viewer, conn: DbConn) -> DeviceConfigOut:
    return DeviceConfigOut.of(await config_store.get_device_config(conn, device_id))


@router.put("/devices/{device_id}/config", response_model=DeviceConfigOut)
async def put_device_config(
    device_id: DeviceId, body: ConfigBody, user: Operator, conn: DbConn, context: Context
) -> DeviceConfigOut:
    """Replace the device's own object; publish the new effective configuration."""
    return await _change_device(conn, context, user, device_id, body.config, patch=False)


@router.patch("/devices/{device_id}/config", response_model=DeviceConfigOut)
async def patch_device_config(
    device_id: DeviceId, body: ConfigBody, user: Operator, conn: DbConn, context: Context
) -> DeviceConfigOut:
    """Merge into the device's own object (JSON Merge Patch: `null` removes a key)."""
    return await _change_device(conn, context, user, device_id, body.config, patch=True)


@router.get("/devices/{device_id}/config/history", response_model=ConfigHistory)
async def device_config_history(
    device_id: DeviceId, _: Viewer, conn: DbConn, limit: Limit = 100, cursor: Cursor = None
) -> ConfigHistory:
    """The changes that reached the device (its own, its group's, its moves), newest first."""
    page = await config_store.device_history(conn, device_id, limit=limit, cursor=cursor)
    return ConfigHistory(
        items=[ConfigChangeOut.of(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get("/groups/{name}/config", response_model=GroupConfigOut)
async def get_group_config(name: GroupName, _: Viewer, conn: DbConn) -> GroupConfigOut:
    return GroupConfigOut.of(await config_store.get_group_config(conn, name))


@router.put("/groups/{name}/config", response_model=GroupConfigChanged)
async def put_group_config(
    name: GroupName, body: ConfigBody, user: Operator, conn: DbConn, context: Context
) -> GroupConfigChanged:
    """Replace the group's object; every device whose effective configuration changes gets
    a new version, published at once."""
    actor = audit_store.user_actor(user.username)
    try:
        async with conn.transaction():
            group, versioned = await config_store.set_group_config(
                conn, name, _checked(body.config), actor=actor, max_effective_bytes=MAX_CONFIG_BYTES
            )
            await audit_store.record(
                conn,
                actor=actor,
                action="config.update",
                target_type="group",
                target_id=name,
                detail={"version": group.version, "devices_versioned": len(versioned)},
            )
    except ConfigTooLargeError as exc:
        raise ApiError(422, f"config: {exc}") from exc
    delivery = await deliver(
        conn,
        context.publisher,
        context.settings.topics,
        device_ids=[v.device_id for v in versioned],
    )
    return GroupConfigChanged(
        **GroupConfigOut.of(group).model_dump(),
        devices_versioned=len(versioned),
        delivery_pending=max(len(versioned) - delivery.published, 0),
    )


@router.get("/groups/{name}/config/history", response_model=ConfigHistory)
async def group_config_history(
    name: GroupName, _: Viewer, conn: DbConn, limit: Limit = 100, cursor: Cursor = None
) -> ConfigHistory:
    """Changes of the group's object, newest first."""
    page = await config_store.group_history(conn, name, limit=limit, cursor=cursor)
    return ConfigHistory(
        items=[ConfigChangeOut.of(c) for c in page.items], next_cursor=page.next_cursor
    )
