"""Desired configuration end to end: set through the API, received retained by the device over
MQTT, the applied version reported in its status, and the API telling whether it is in sync."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from tests.e2e.conftest import DeviceClient, Platform, eventually


async def config_state(platform: Platform, device_id: str) -> dict[str, Any]:
    async with platform.http() as http:
        answer = await http.get(f"/api/v1/devices/{device_id}/config")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def set_config(platform: Platform, device_id: str, config: dict[str, Any]) -> dict[str, Any]:
    async with platform.http() as http:
        answer = await http.put(f"/api/v1/devices/{device_id}/config", json={"config": config})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def latest_config(device: DeviceClient, topic: str) -> dict[str, Any] | None:
    messages = [orjson.loads(payload) for t, payload in device.received if t == topic and payload]
    return messages[-1] if messages else None


async def test_a_device_applies_its_configuration_and_the_api_shows_it_in_sync(
    platform: Platform,
) -> None:
    device_id = f"twin-{uuid.uuid4().hex[:6]}"
    password = await platform.register(device_id)
    first = await set_config(platform, device_id, {"interval_s": 30, "led": {"on": True}})
    assert (first["version"], first["published_version"], first["in_sync"]) == (1, 1, False)

    # Subscribing after the change: the configuration was retained for the device.
    device = await DeviceClient(device_id, password, platform.mqtt_port).connect()
    try:
        topic = f"devices/{device_id}/config"
        assert await device.subscribe(topic) == 1

        async def received(version: int) -> dict[str, Any]:
            message = latest_config(device, topic)
            assert message is not None and message["version"] == version, device.received
            return message

        message = await eventually(lambda: received(1))
        assert message == {"version": 1, "config": {"interval_s": 30, "led": {"on": True}}}

        async def reported(version: int, in_sync: bool) -> None:
            state = await config_state(platform, device_id)
            assert (state["reported_version"], state["in_sync"]) == (version, in_sync), state
            assert state["reported_at"] is not None

        device.publish("status", orjson.dumps({"status": "online", "config_version": 1}))
        await eventually(lambda: reported(1, True))

        # A new configuration: out of sync until the device reports having applied it.
        second = await set_config(platform, device_id, {"interval_s": 10})
        assert (second["version"], second["reported_version"], second["in_sync"]) == (2, 1, False)
        assert (await eventually(lambda: received(2)))["config"] == {"interval_s": 10}
        assert (await config_state(platform, device_id))["in_sync"] is False
        device.publish("status", orjson.dumps({"status": "online", "config_version": 2}))
        await eventually(lambda: reported(2, True))
    finally:
        await device.close()


async def test_a_bad_reported_version_is_rejected_visibly(platform: Platform) -> None:
    device_id = f"twin-{uuid.uuid4().hex[:6]}"
    password = await platform.register(device_id)
    device = await DeviceClient(device_id, password, platform.mqtt_port).connect()
    try:
        device.publish("status", b'{"status": "online", "config_version": "latest"}')

        async def rejected() -> None:
            async with platform.http() as http:
                answer = await http.get("/api/v1/rejected", params={"device_id": device_id})
            items = answer.json()["items"]
            assert [i["reason"] for i in items] == ["invalid_payload"], items
            assert "config_version" in items[0]["detail"]

        await eventually(rejected)
        assert (await config_state(platform, device_id))["reported_version"] is None
    finally:
        await device.close()
