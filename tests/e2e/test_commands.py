"""Commands end to end through `fieldline up`: a device that was offline when a command was
sent gets it once it is back, answers it, and the API shows the answer."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from tests.e2e.conftest import DeviceClient, Platform, eventually


async def command(platform: Platform, device_id: str, command_id: str) -> dict[str, Any]:
    async with platform.http() as http:
        answer = await http.get(f"/api/v1/devices/{device_id}/commands/{command_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_device_gets_a_command_sent_while_it_was_offline_and_answers_it(
    platform: Platform,
) -> None:
    device_id = f"pump-{uuid.uuid4().hex[:6]}"
    password = await platform.register(device_id)
    async with platform.http() as http:
        sent = await http.post(
            f"/api/v1/devices/{device_id}/commands",
            json={"name": "set_interval", "params": {"seconds": 30}, "timeout_seconds": 600},
        )
    assert sent.status_code == 201, sent.text
    created = sent.json()
    assert (created["status"], created["sent_at"]) == ("pending", None)

    # The device comes online: subscribe first, then say so.
    device = await DeviceClient(device_id, password, platform.mqtt_port).connect()
    assert await device.subscribe(f"devices/{device_id}/commands") == 1
    device.publish("status", orjson.dumps({"status": "online", "firmware_version": "v1.0.0"}))

    async def delivered() -> dict[str, Any]:
        messages = [orjson.loads(p) for t, p in device.received if t.endswith("/commands")]
        assert messages
        return dict(messages[0])

    message = await eventually(delivered)
    assert message == {
        "command_id": created["command_id"],
        "name": "set_interval",
        "params": {"seconds": 30},
    }
    assert (await command(platform, device_id, created["command_id"]))["status"] == "sent"

    answer = {"command_id": message["command_id"], "status": "succeeded", "result": {"now": 30}}
    device.publish("commands/result", orjson.dumps(answer))

    async def answered() -> dict[str, Any]:
        current = await command(platform, device_id, created["command_id"])
        assert current["status"] == "succeeded"
        return current

    done = await eventually(answered)
    assert done["result"] == {"now": 30}
    assert done["sent_at"] is not None and done["completed_at"] is not None
    async with platform.http() as http:
        listed = (await http.get(f"/api/v1/devices/{device_id}/commands")).json()["items"]
    assert [c["command_id"] for c in listed] == [created["command_id"]]

    # Online now, so the next command goes out at once.
    async with platform.http() as http:
        again = await http.post(f"/api/v1/devices/{device_id}/commands", json={"name": "ping"})
    assert again.status_code == 201 and again.json()["status"] == "sent"

    async def second() -> None:
        assert len([t for t, _ in device.received if t.endswith("/commands")]) == 2

    await eventually(second)
    await device.close()
