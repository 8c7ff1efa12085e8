"""Server-sent events for the dashboard: the fleet's numbers and one device's state.

Each stream sends every part once when it opens, then a part again whenever it
changed. A device's latest values are sent as soon as a writer announces them
(the latest-values mirror's notifications); the rest is read again every
second. A stream ends with an `expired` event when the access token it was
opened with expires or, within a few seconds, is revoked (the page refreshes its
token and opens it again, or finds its session over), with
`gone` when the device is deleted, and without a word when the server stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.sse import EventSourceResponse, ServerSentEvent

from fieldline.api.context import ApiContext
from fieldline.api.deps import Context, StreamViewer
from fieldline.api.latest import read_encoded
from fieldline.api.routes import fleet
from fieldline.api.routes.commands import CommandList, CommandOut
from fieldline.api.routes.config import DeviceConfigOut
from fieldline.api.routes.devices import DeviceId, DeviceOut
from fieldline.storage import commands as command_store
from fieldline.storage import config as config_store
from fieldline.storage import devices as device_store
from fieldline.storage.errors import NotFoundError

router = APIRouter(prefix="/api/v1", tags=["streams"])

DEVICE_TICK_SECONDS = 1.0
FLEET_TICK_SECONDS = 2.0
COMMANDS_SHOWN = 20


async def _pause(context: ApiContext, seconds: float, wake: asyncio.Event | None = None) -> None:
    """Sleep until `seconds` pass, `wake` is set, or the server starts stopping."""
    waits = [asyncio.ensure_future(context.closing.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


async def _device_parts(context: ApiContext, device_id: str) -> dict[str, str]:
    async with context.pool.connection() as conn:
        device = DeviceOut.of(await device_store.get_device(conn, device_id), context)
        latest = (await read_encoded(conn, [device_id]))[0]
        config = DeviceConfigOut.of(await config_store.get_device_config(conn, device_id))
        commands = await command_store.list_commands(
            conn, device_id=device_id, status=None, limit=COMMANDS_SHOWN, cursor=None
        )
    return {
        "device": device.model_dump_json(),
        "latest": latest.decode(),
        "config": config.model_dump_json(),
        "commands": CommandList(
            items=[CommandOut.of(c) for c in commands.items], next_cursor=commands.next_cursor
        ).model_dump_json(),
    }


async def _existing_device(device_id: DeviceId, _: StreamViewer, context: Context) -> str:
    """Checked before the stream starts, so an unknown device is a 404, not an empty stream."""
    async with context.pool.connection() as conn:
        await device_store.get_device(conn, device_id)
    return device_id


@router.get("/devices/{device_id}/stream", response_class=EventSourceResponse)
async def device_stream(
    device_id: Annotated[str, Depends(_existing_device)],
    caller: StreamViewer,
    context: Context,
) -> AsyncIterator[ServerSentEvent]:
    """Events `device`, `latest`, `config` and `commands` (each as its GET answers it),
    sent when they change; `gone` when the device is deleted; `expired` with the token."""
    await context.latest.start()  # without it, changes are still seen within a tick
    sent: dict[str, str] = {}
    with context.latest.changes(device_id) as changed:
        while not context.closing.is_set():
            if reason := await caller.ended():
                yield ServerSentEvent(event="expired", data={"reason": reason})
                return
            changed.clear()
            try:
                parts = await _device_parts(context, device_id)
            except NotFoundError:
                yield ServerSentEvent(event="gone", data={"device_id": device_id})
                return
            for name, data in parts.items():
                if sent.get(name) != data:
                    sent[name] = data
                    yield ServerSentEvent(event=name, raw_data=data)
            await _pause(context, DEVICE_TICK_SECONDS, changed)


@router.get("/fleet/stream", response_class=EventSourceResponse)
async def fleet_stream(caller: StreamViewer, context: Context) -> AsyncIterator[ServerSentEvent]:
    """`summary` events (as GET /api/v1/fleet/summary answers), sent when it changes."""
    sent = ""
    while not context.closing.is_set():
        if reason := await caller.ended():
            yield ServerSentEvent(event="expired", data={"reason": reason})
            return
        async with context.pool.connection() as conn:
            data = (await fleet.summary(conn, context)).model_dump_json()
        if data != sent:
            sent = data
            yield ServerSentEvent(event="summary", raw_data=data)
        await _pause(context, FLEET_TICK_SECONDS)
