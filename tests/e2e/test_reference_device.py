"""examples/reference_device.py, the device developer's reference, against `fieldline up`:
it provisions itself, publishes, applies its configuration, answers a command and takes a
signed firmware update, coming back on the new version."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Platform, eventually
from tests.e2e.test_lifecycle import api_get, provisioning_key

EXAMPLE = Path(__file__).parents[2] / "examples" / "reference_device.py"


async def test_the_reference_device_does_what_the_guide_says(
    platform: Platform, tmp_path: Path
) -> None:
    key_id, secret = await provisioning_key(platform)
    device_id = f"ref-{uuid.uuid4().hex[:6]}"
    device = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE),
            "--api",
            platform.api_url,
            "--key-id",
            key_id,
            "--key-secret",
            secret,
            "--device-id",
            device_id,
            "--credentials",
            str(tmp_path / "credentials.json"),
            "--interval",
            "0.5",
        ],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        async def publishing() -> None:
            latest = await api_get(platform, f"/api/v1/devices/{device_id}/telemetry/latest")
            assert "temperature" in latest["metrics"], latest

        await eventually(publishing, timeout=30)
        async with platform.http() as http:
            put = await http.put(
                f"/api/v1/devices/{device_id}/config", json={"config": {"interval_s": 1}}
            )
            assert put.status_code == 200, put.text
            sent = await http.post(f"/api/v1/devices/{device_id}/commands", json={"name": "ping"})
            assert sent.status_code == 201, sent.text
        command_id = sent.json()["command_id"]

        async def applied_and_answered() -> None:
            config = await api_get(platform, f"/api/v1/devices/{device_id}/config")
            assert config["in_sync"] is True and config["reported_version"] == 1, config
            command: dict[str, Any] = await api_get(
                platform, f"/api/v1/devices/{device_id}/commands/{command_id}"
            )
            assert command["status"] == "succeeded", command
            assert command["result"] == {"pong": True}

        await eventually(applied_and_answered, timeout=30)

        # A firmware update: uploaded for its model, rolled out to it alone.
        image = os.urandom(150_000)
        async with platform.http() as http:
            uploaded = await http.post(
                "/api/v1/firmware",
                data={"device_model": "reference", "version": "ref-1.1"},
                files={"file": ("ref.bin", image, "application/octet-stream")},
            )
            assert uploaded.status_code == 201, uploaded.text
            assert uploaded.json()["sha256"] == hashlib.sha256(image).hexdigest()
            rollout = await http.post(
                "/api/v1/rollouts",
                json={
                    "firmware": {"device_model": "reference", "version": "ref-1.1"},
                    "target": {"groups": [], "device_ids": [device_id]},
                    "percentage": 100,
                    "settle_seconds": 2,
                },
            )
            assert rollout.status_code == 201, rollout.text
        rollout_id = rollout.json()["id"]

        async def updated() -> None:
            shown = await api_get(platform, f"/api/v1/rollouts/{rollout_id}")
            states = [(d["state"], d["from_version"]) for d in shown["devices"]]
            assert states == [("succeeded", "ref-1.0")], shown
            device_shown = await api_get(platform, f"/api/v1/devices/{device_id}")
            assert device_shown["firmware_version"] == "ref-1.1", device_shown
            assert device_shown["status"] == "online", device_shown

        await eventually(updated, timeout=60, interval=0.5)
        history = await api_get(platform, f"/api/v1/devices/{device_id}/updates")
        assert [(u["rollout_id"], u["state"]) for u in history["items"]] == [
            (rollout_id, "succeeded")
        ], history

        # It keeps publishing after the reboot.
        path = f"/api/v1/devices/{device_id}/telemetry/latest"
        before = (await api_get(platform, path))["metrics"]["temperature"]

        async def publishing_again() -> None:
            latest = await api_get(platform, path)
            assert latest["metrics"]["temperature"] != before, latest

        await eventually(publishing_again, timeout=30)
    finally:
        device.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(device.communicate, timeout=30)
    assert device.returncode == 0, output.decode()
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600

    async def offline() -> None:
        shown = await api_get(platform, f"/api/v1/devices/{device_id}")
        assert shown["status"] == "offline", shown

    await eventually(offline)
