"""Commands to devices: send one, list a device's commands, follow one to its result."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from fieldline.api.deps import Context, DbConn, Operator, Viewer
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.api.routes.devices import DeviceId
from fieldline.devices.commands import create_command
from fieldline.devices.errors import DeviceDisabledError, InvalidCommandError
from fieldline.domain.commands import Command, CommandStatus
from fieldline.storage import audit as audit_store
from fieldline.storage import commands as command_store
from fieldline.storage import devices as device_store

router = APIRouter(prefix="/api/v1/devices/{device_id}/commands", tags=["commands"])


class CommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="What the device should do")
    params: dict[str, Any] = Field(default_factory=dict, description="Arguments, any JSON object")
    timeout_seconds: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="Expire the command if the device has not answered within this; at most "
        "and by default FIELDLINE_COMMAND_TIMEOUT_SECONDS.",
    )


class CommandOut(BaseModel):
    command_id: UUID
    device_id: str
    name: str
    params: dict[str, Any]
    status: CommandStatus = Field(
        description="pending (not yet sent: the device is offline), sent (the broker has it), "
        "succeeded or failed (as the device answered), expired (no answer in time)"
    )
    created_at: datetime
    created_by: str
    sent_at: datetime | None
    completed_at: datetime | None
    expires_at: datetime
    result: Any = Field(description="What the device answered with, any JSON")

    @classmethod
    def of(cls, command: Command) -> CommandOut:
        return cls.model_validate(command, from_attributes=True)


class CommandList(BaseModel):
    items: list[CommandOut]
    next_cursor: str | None


@router.post(
    "",
    status_code=201,
    response_model=CommandOut,
    responses={409: {"description": "conflict: the device is disabled"}},
)
async def send_command(
    device_id: DeviceId, body: CommandCreate, user: Operator, conn: DbConn, context: Context
) -> CommandOut:
    """Send a command: at once when the device is online, else when it is next online."""
    settings = context.settings
    try:
        command = await create_command(
            conn,
            publisher=context.publisher,
            topics=context.settings.topics,
            actor=audit_store.user_actor(user.username),
            device_id=device_id,
            name=body.name,
            params=body.params,
            timeout_seconds=body.timeout_seconds,
            max_timeout_seconds=settings.command_timeout_seconds,
            online_timeout=timedelta(seconds=settings.online_timeout_seconds),
        )
    except InvalidCommandError as exc:
        raise ApiError(422, str(exc)) from exc
    except DeviceDisabledError as exc:
        raise ApiError(409, str(exc)) from exc
    return CommandOut.of(command)


@router.get("", response_model=CommandList)
async def list_commands(
    device_id: DeviceId,
    _: Viewer,
    conn: DbConn,
    status: Annotated[CommandStatus | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> CommandList:
    """Newest first."""
    await device_store.get_device(conn, device_id)
    page = await command_store.list_commands(
        conn, device_id=device_id, status=status, limit=limit, cursor=cursor
    )
    return CommandList(items=[CommandOut.of(c) for c in page.items], next_cursor=page.next_cursor)


@router.get("/{command_id}", response_model=CommandOut)
async def get_command(device_id: DeviceId, command_id: UUID, _: Viewer, conn: DbConn) -> CommandOut:
    return CommandOut.of(await command_store.get_command(conn, device_id, command_id))
