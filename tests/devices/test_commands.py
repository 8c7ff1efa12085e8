"""Creating commands without HTTP: refusals come before anything is stored."""

from __future__ import annotations

from datetime import timedelta

import pytest
from psycopg import AsyncConnection

from fieldline import devices
from fieldline.devices.errors import DeviceDisabledError, InvalidCommandError
from fieldline.domain.commands import Command, CommandStatus
from fieldline.storage import commands as command_store
from fieldline.storage.db import Row
from tests.devices.conftest import TOPICS, Fleet
from tests.devices.test_registry import ACTOR, register


async def command(
    conn: AsyncConnection[Row], device_id: str, *, timeout_seconds: float | None = None
) -> Command:
    return await devices.create_command(
        conn,
        publisher=None,
        topics=TOPICS,
        actor=ACTOR,
        device_id=device_id,
        name="reboot",
        params={"delay": 5},
        timeout_seconds=timeout_seconds,
        max_timeout_seconds=600,
        online_timeout=timedelta(seconds=120),
    )


async def test_commands_are_stored_pending_or_refused(fleet: Fleet) -> None:
    await register(fleet, "pump-1")
    async with fleet.pool.connection() as conn:
        created = await command(conn, "pump-1")
        with pytest.raises(InvalidCommandError, match="at most 600 on this server"):
            await command(conn, "pump-1", timeout_seconds=601)
        await devices.update_device(
            conn,
            broker=fleet.broker,
            publisher=None,
            topics=TOPICS,
            actor=ACTOR,
            device_id="pump-1",
            changes={"enabled": False},
        )
        with pytest.raises(DeviceDisabledError, match="'pump-1' is disabled"):
            await command(conn, "pump-1")
        page = await command_store.list_commands(
            conn, device_id="pump-1", status=None, limit=10, cursor=None
        )
    # Never seen online: it waits for the dispatcher.
    assert [(c.command_id, c.status) for c in page.items] == [
        (created.command_id, CommandStatus.PENDING)
    ]
