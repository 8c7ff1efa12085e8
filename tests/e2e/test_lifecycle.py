"""A device's whole life on a real `fieldline up`: it knows only a provisioning key, registers
itself, publishes over MQTT and HTTP, applies its configuration, and answers a command sent
while it was offline. Then the same with `fieldline simulate --provision-key`."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from tests.e2e.conftest import DeviceClient, Platform, eventually


async def provisioning_key(platform: Platform, **scope: Any) -> tuple[str, str]:
    async with platform.http() as http:
        answer = await http.post(
            "/api/v1/provisioning-keys", json={"name": f"factory-{uuid.uuid4().hex[:6]}", **scope}
        )
    assert answer.status_code == 201, answer.text
    return answer.json()["key_id"], answer.json()["secret"]


def signed(key_id: str, secret: str, body: bytes) -> dict[str, str]:
    """What firmware computes: hex HMAC-SHA256 of "{timestamp}.{body}"."""
    timestamp = str(int(time.time()))
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "Content-Type": "application/json",
        "X-Key-Id": key_id,
        "X-Timestamp": timestamp,
        "X-Signature": mac.hexdigest(),
    }


async def api_get(platform: Platform, path: str) -> dict[str, Any]:
    async with platform.http() as http:
        answer = await http.get(path)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_device_lives_its_whole_life_from_a_provisioning_key(platform: Platform) -> None:
    key_id, secret = await provisioning_key(platform)
    device_id = f"field-{uuid.uuid4().hex[:6]}"

    # 1. Zero-touch provisioning: the key is all the device knows.
    body = json.dumps({"device_id": device_id, "device_type": "soil-probe"}).encode()
    async with httpx.AsyncClient(base_url=platform.api_url, timeout=30) as anonymous:
        answer = await anonymous.post(
            "/provision", content=body, headers=signed(key_id, secret, body)
        )
        assert answer.status_code == 201, answer.text
        mqtt = answer.json()
        assert mqtt["username"] == device_id and mqtt["port"] == platform.mqtt_port
        password = mqtt["password"]
        # The same signed request again is a replay.
        replay = await anonymous.post(
            "/provision", content=body, headers=signed(key_id, secret, body)
        )
        assert replay.status_code in (401, 409), replay.text

        # 2. Telemetry over MQTT and over HTTP, with its own credentials.
        device = await DeviceClient(device_id, password, platform.mqtt_port).connect()
        assert await device.subscribe(f"devices/{device_id}/config") == 1
        assert await device.subscribe(f"devices/{device_id}/commands") == 1
        device.publish(
            "telemetry", json.dumps({"message_id": "mqtt-1", "sensors": {"moisture": 41.0}})
        )
        over_http = await anonymous.post(
            f"/api/v1/devices/{device_id}/telemetry",
            auth=(device_id, password),
            json={"message_id": "http-1", "sensors": {"temperature": 19.5}},
        )
        assert over_http.status_code == 202, over_http.text

    async def both_stored() -> None:
        latest = await api_get(platform, f"/api/v1/devices/{device_id}/telemetry/latest")
        assert set(latest["metrics"]) == {"moisture", "temperature"}, latest

    await eventually(both_stored)

    # 3. Configuration: desired, delivered retained, applied and reported.
    async with platform.http() as http:
        put = await http.put(
            f"/api/v1/devices/{device_id}/config", json={"config": {"interval_s": 30}}
        )
    assert put.status_code == 200, put.text
    version = put.json()["version"]

    async def configured() -> dict[str, Any]:
        for topic, payload in device.received:
            if topic.endswith("/config"):
                message: dict[str, Any] = json.loads(payload)
                if message["version"] == version:
                    return message
        raise AssertionError(device.received)

    message = await eventually(configured)
    assert message["config"] == {"interval_s": 30}
    device.publish("status", json.dumps({"status": "online", "config_version": version}))

    async def in_sync() -> None:
        config = await api_get(platform, f"/api/v1/devices/{device_id}/config")
        assert config["in_sync"] is True and config["reported_version"] == version, config

    await eventually(in_sync)

    # 4. A command sent while the device is offline waits for it. The device says goodbye
    # as firmware does on a clean shutdown (an abrupt drop fires its last will instead).
    device.publish("status", json.dumps({"status": "offline"}))

    async def offline() -> None:
        shown = await api_get(platform, f"/api/v1/devices/{device_id}")
        assert shown["status"] == "offline", shown

    await eventually(offline)
    await device.close()
    async with platform.http() as http:
        sent = await http.post(
            f"/api/v1/devices/{device_id}/commands", json={"name": "reboot", "params": {}}
        )
    assert sent.status_code == 201, sent.text
    command_id = sent.json()["command_id"]
    assert sent.json()["status"] == "pending"

    back = await DeviceClient(device_id, password, platform.mqtt_port).connect()
    await back.subscribe(f"devices/{device_id}/commands")
    back.publish("status", json.dumps({"status": "online", "config_version": version}))

    async def delivered() -> dict[str, Any]:
        for topic, payload in back.received:
            if topic.endswith("/commands"):
                command: dict[str, Any] = json.loads(payload)
                if command["command_id"] == command_id:
                    return command
        raise AssertionError(back.received)

    command = await eventually(delivered, timeout=30)
    assert command["name"] == "reboot"
    back.publish(
        "commands/result",
        json.dumps({"command_id": command_id, "status": "succeeded", "result": {"boot": 2}}),
    )

    async def answered() -> None:
        row = await api_get(platform, f"/api/v1/devices/{device_id}/commands/{command_id}")
        assert row["status"] == "succeeded" and row["result"] == {"boot": 2}, row

    await eventually(answered)
    await back.close()

    # 5. The audit log tells the story.
    log = await api_get(platform, f"/api/v1/audit?target_id={device_id}")
    actions = {entry["action"] for entry in log["items"]}
    assert {"device.provision", "config.update", "command.send"} <= actions, actions


async def test_simulate_with_a_provisioning_key_shows_the_lifecycle(platform: Platform) -> None:
    group = f"sim-{uuid.uuid4().hex[:6]}"
    async with platform.http() as http:
        assert (await http.post("/api/v1/groups", json={"name": group})).status_code == 201
    key_id, secret = await provisioning_key(platform, group=group)
    prefix = f"p{uuid.uuid4().hex[:5]}"
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fieldline",
            "simulate",
            "--provision-key",
            f"{key_id}:{secret}",
            "--devices",
            "3",
            "--duration",
            "40",
            "--prefix",
            prefix,
            "--api-url",
            platform.api_url,
            "--mqtt-port",
            str(platform.mqtt_port),
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith("FIELDLINE_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        devices = [f"{prefix}-{n:04d}" for n in (1, 2, 3)]

        async def online() -> None:
            listed = await api_get(platform, f"/api/v1/devices?group={group}")
            status = {d["device_id"]: d["status"] for d in listed["items"]}
            assert status == dict.fromkeys(devices, "online"), status

        await eventually(online, timeout=30)
        async with platform.http() as http:
            put = await http.put(f"/api/v1/groups/{group}/config", json={"config": {"unit": "C"}})
            assert put.status_code == 200, put.text
            sent = await http.post(f"/api/v1/devices/{devices[0]}/commands", json={"name": "ping"})
            assert sent.status_code == 201, sent.text
        command_id = sent.json()["command_id"]

        async def all_applied() -> None:
            for device_id in devices:
                config = await api_get(platform, f"/api/v1/devices/{device_id}/config")
                assert config["in_sync"] is True, config

        await eventually(all_applied, timeout=30)

        async def pong() -> None:
            row = await api_get(platform, f"/api/v1/devices/{devices[0]}/commands/{command_id}")
            assert row["status"] == "succeeded" and row["result"] == {"pong": True}, row

        await eventually(pong, timeout=30)
    finally:
        output, _ = await asyncio.to_thread(simulator.communicate, timeout=60)
    text = output.decode()
    assert simulator.returncode == 0, text
    assert "devices connected: 3/3" in text, text
    assert "configurations applied: 3" in text and "commands answered: 1" in text, text
