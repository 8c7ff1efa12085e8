"""The dashboard's event streams, read over a real HTTP server as a browser reads them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from fieldline.api.app import create_app
from fieldline.api.tokens import TokenIssuer, TokenKind
from fieldline.domain.readings import Reading
from fieldline.runtime.http import HttpServer
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.api.conftest import Api

EVENT_TIMEOUT = 10.0  # generous: a missing event fails the test instead of hanging it


class Events:
    """Server-sent events of one open stream, parsed as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self) -> tuple[str, Any]:
        event, data = "message", []
        while True:
            line = await asyncio.wait_for(anext(self._lines), EVENT_TIMEOUT)
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                return event, orjson.loads("\n".join(data))

    async def until(self, name: str, check: Any = lambda _: True) -> Any:
        """The next `name` event whose data passes `check`, skipping others."""
        while True:
            event, data = await self.next()
            if event == name and check(data):
                return data


@pytest.fixture
async def server(api: Api) -> AsyncIterator[str]:
    http = HttpServer(create_app(api.context), "127.0.0.1", 0, on_stopping=api.context.closing.set)
    stopping = asyncio.Event()
    serving = asyncio.create_task(http.serve(stopping))
    await http.wait_started()
    yield f"http://127.0.0.1:{http.port}"
    stopping.set()
    await asyncio.wait_for(serving, 30)


@contextlib.asynccontextmanager
async def open_stream(url: str, headers: dict[str, str]) -> AsyncIterator[Events]:
    async with (
        httpx.AsyncClient(headers=headers, timeout=30) as http,
        http.stream("GET", url, headers={"Accept": "text/event-stream"}) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Events(response)


async def write(api: Api, device_id: str, metrics: dict[str, float]) -> None:
    now = datetime.now(UTC)
    batch = Batch(telemetry=[DeviceReadings(device_id, now, [Reading(None, now, metrics, {})])])
    async with await psycopg.AsyncConnection.connect(api.url, autocommit=True) as conn:
        await write_batch(conn, batch, PartitionCache())


async def test_a_device_stream_sends_each_change_as_it_happens(
    api: Api, admin: dict[str, str], server: str
) -> None:
    created = await api.http.post("/api/v1/devices", headers=admin, json={"device_id": "tank"})
    assert created.status_code == 201
    viewer = await api.user("viewer")

    async with open_stream(f"{server}/api/v1/devices/tank/stream", viewer) as events:
        opened = {}
        for _ in range(4):  # every part once, at once
            name, data = await events.next()
            opened[name] = data
        assert set(opened) == {"device", "latest", "config", "commands"}
        assert opened["device"]["status"] == "never_seen"
        assert opened["latest"] == {"device_id": "tank", "metrics": {}}
        assert opened["commands"]["items"] == []

        await write(api, "tank", {"level": 71.5})
        latest = await events.until("latest")
        assert latest["metrics"]["level"]["value"] == 71.5

        sent = await api.http.post(
            "/api/v1/devices/tank/commands", headers=admin, json={"name": "ping"}
        )
        assert sent.status_code == 201
        commands = await events.until("commands")
        assert [c["name"] for c in commands["items"]] == ["ping"]

        put = await api.http.put(
            "/api/v1/devices/tank/config", headers=admin, json={"config": {"interval": 30}}
        )
        assert put.status_code == 200
        config = await events.until("config")
        assert config["effective"] == {"interval": 30}

        deleted = await api.http.delete("/api/v1/devices/tank", headers=admin)
        assert deleted.status_code == 204
        assert await events.until("gone") == {"device_id": "tank"}


async def test_the_fleet_stream_sends_the_summary(
    api: Api, admin: dict[str, str], server: str
) -> None:
    async with open_stream(f"{server}/api/v1/fleet/stream", admin) as events:
        first = await events.until("summary")
        assert first["devices"]["total"] == 0
        created = await api.http.post("/api/v1/devices", headers=admin, json={"device_id": "new"})
        assert created.status_code == 201
        changed = await events.until("summary", lambda s: s["devices"]["total"] == 1)
        assert changed["devices"]["never_seen"] == 1


async def test_streams_refuse_who_may_not_read_them(
    api: Api, admin: dict[str, str], server: str
) -> None:
    async with httpx.AsyncClient(base_url=server) as http:
        anonymous = await http.get("/api/v1/fleet/stream")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["message"]
        missing = await http.get("/api/v1/devices/ghost/stream", headers=admin)
        assert missing.status_code == 404


async def test_open_streams_do_not_keep_the_server_from_stopping(
    api: Api, admin: dict[str, str]
) -> None:
    http = HttpServer(create_app(api.context), "127.0.0.1", 0, on_stopping=api.context.closing.set)
    stopping = asyncio.Event()
    serving = asyncio.create_task(http.serve(stopping))
    await http.wait_started()
    async with open_stream(f"http://127.0.0.1:{http.port}/api/v1/fleet/stream", admin) as events:
        await events.until("summary")
        stopping.set()
        # Without the streams ending, uvicorn waits for them for ever.
        await asyncio.wait_for(serving, 15)


async def test_a_stream_ends_when_its_token_expires(
    api: Api, admin: dict[str, str], server: str
) -> None:
    me = await api.http.get("/api/v1/auth/me", headers=admin)
    short = TokenIssuer(
        secret_key=api.context.secret_key,
        access_ttl=timedelta(seconds=3),
        refresh_ttl=timedelta(days=1),
    ).issue(TokenKind.ACCESS, user_id=me.json()["id"], version=0, session_id="short")

    async with open_stream(
        f"{server}/api/v1/fleet/stream", {"Authorization": f"Bearer {short}"}
    ) as events:
        await events.until("summary")
        # The page renews its token and opens the stream again on this event.
        assert await events.until("expired") == {"reason": "token expired"}
