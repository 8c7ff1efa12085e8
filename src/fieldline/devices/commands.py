"""Creating a command for a device: stored and audited, then sent at once if it is online.

An offline device's command stays pending and the worker's dispatcher sends it when
the device is next online (`fieldline.downlink.commands`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from psycopg import AsyncConnection

from fieldline.broker.publisher import Publisher
from fieldline.devices.errors import DeviceDisabledError, InvalidCommandError
from fieldline.domain.commands import (
    MAX_MESSAGE_BYTES,
    Command,
    UnstorableJsonError,
    command_message,
)
from fieldline.domain.devices import ConnectionStatus
from fieldline.domain.topics import TopicScheme
from fieldline.downlink.commands import send_new
from fieldline.storage import audit as audit_store
from fieldline.storage import commands as command_store
from fieldline.storage import devices as device_store
from fieldline.storage.db import Row


async def create_command(
    conn: AsyncConnection[Row],
    *,
    publisher: Publisher | None,
    topics: TopicScheme,
    actor: str,
    device_id: str,
    name: str,
    params: dict[str, object],
    timeout_seconds: float | None,
    max_timeout_seconds: float,
    online_timeout: timedelta,
) -> Command:
    """Store the command (expiring after `timeout_seconds`, default and at most
    `max_timeout_seconds`) and send it if the device is online; answer it as it is then.

    Refuses with `InvalidCommandError` before touching the device, then
    `NotFoundError` and `DeviceDisabledError`.
    """
    timeout = timeout_seconds or max_timeout_seconds
    if timeout > max_timeout_seconds:
        raise InvalidCommandError(
            f"timeout_seconds: at most {max_timeout_seconds:g} on this server"
        )
    try:
        message = command_message(UUID(int=0), name, params)
    except UnstorableJsonError as exc:
        raise InvalidCommandError(f"params: {exc}") from exc
    if len(message.encode()) > MAX_MESSAGE_BYTES:
        raise InvalidCommandError(f"the command message is over {MAX_MESSAGE_BYTES} bytes")
    device = await device_store.get_device(conn, device_id)
    if not device.enabled:
        raise DeviceDisabledError(device_id)
    async with conn.transaction():
        command = await command_store.create_command(
            conn,
            device_id=device_id,
            name=name,
            params=params,
            created_by=actor,
            expires_in=timedelta(seconds=timeout),
        )
        await audit_store.record(
            conn,
            actor=actor,
            action="command.send",
            target_type="device",
            target_id=device_id,
            detail={"command_id": str(command.command_id), "name": name},
        )
    online = (
        device.status(now=datetime.now(UTC), online_timeout=online_timeout)
        is ConnectionStatus.ONLINE
    )
    if online and publisher is not None:
        command = await send_new(conn, publisher, topics, command)
    return command
