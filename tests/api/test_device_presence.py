"""A device fieldline disconnects is offline at once (issue 12).

Disabling a device or rotating its credentials makes the broker drop its session; the
status API said "online" for up to FIELDLINE_ONLINE_TIMEOUT_SECONDS afterwards, because
a device without a last will (or whose will the broker does not send) never said
otherwise. Against a real `fieldline up` with its managed Mosquitto and a real device
connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
from gmqtt.mqtt.constants import MQTTv311

from tests.api.conftest import platform_on_pg15
from tests.conftest import PgServer
from tests.e2e.conftest import Platform, eventually
from tests.mqtt_clients import NoReconnectClient


@pytest.fixture(scope="module")
def platform(pg15: PgServer, mosquitto_installed: None) -> Iterator[Platform]:
    with platform_on_pg15(pg15, "presence", {"FIELDLINE_BROKER": "mosquitto"}) as running:
        yield running


@pytest.fixture
async def http(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with platform.http() as client:
        yield client


@dataclass
class Device:
    client: NoReconnectClient
    dropped: asyncio.Event


async def online_device(platform: Platform, http: httpx.AsyncClient, device_id: str) -> Device:
    """Register a device, connect it (no last will) and wait until fieldline shows it online."""
    password = await platform.register(device_id)
    client = NoReconnectClient(device_id)  # its own id as client id, as a device must
    dropped = asyncio.Event()
    client.on_disconnect = lambda *args: dropped.set()
    client.set_auth_credentials(device_id, password)
    await asyncio.wait_for(
        client.connect("127.0.0.1", platform.mqtt_port, version=MQTTv311, keepalive=30), 10
    )
    client.publish(f"devices/{device_id}/status", orjson.dumps({"status": "online"}), qos=1)

    async def shown_online() -> None:
        answer = await http.get(f"/api/v1/devices/{device_id}/status")
        assert answer.json()["status"] == "online", answer.text

    await eventually(shown_online, timeout=30)
    return Device(client, dropped)


async def assert_offline_at_once(http: httpx.AsyncClient, device_id: str, reason: str) -> None:
    status = (await http.get(f"/api/v1/devices/{device_id}/status")).json()
    assert status["status"] == "offline", status
    history = (await http.get(f"/api/v1/devices/{device_id}/status-history")).json()["items"]
    assert history[0]["status"] == "offline"
    assert history[0]["detail"] == {"reason": reason}
    listed = (await http.get(f"/api/v1/devices/{device_id}")).json()
    assert listed["status"] == "offline"


async def test_a_disabled_device_is_offline_at_once(
    platform: Platform, http: httpx.AsyncClient
) -> None:
    device = await online_device(platform, http, "presence-1")
    answer = await http.patch("/api/v1/devices/presence-1", json={"enabled": False})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "offline"
    await assert_offline_at_once(http, "presence-1", "disabled")
    await asyncio.wait_for(device.dropped.wait(), 30)  # the broker did drop it
    await device.client.disconnect()


async def test_a_device_whose_credentials_rotate_is_offline_at_once(
    platform: Platform, http: httpx.AsyncClient
) -> None:
    device = await online_device(platform, http, "presence-2")
    answer = await http.post("/api/v1/devices/presence-2/credentials")
    assert answer.status_code == 200, answer.text
    await assert_offline_at_once(http, "presence-2", "credentials_rotated")
    await asyncio.wait_for(device.dropped.wait(), 30)
    await device.client.disconnect()


async def test_a_never_seen_device_stays_never_seen(
    platform: Platform, http: httpx.AsyncClient
) -> None:
    await platform.register("presence-3")
    assert (await http.post("/api/v1/devices/presence-3/credentials")).status_code == 200
    status = (await http.get("/api/v1/devices/presence-3/status")).json()
    assert status["status"] == "never_seen"
    history = (await http.get("/api/v1/devices/presence-3/status-history")).json()["items"]
    assert history == []
