"""examples/reference_device.py, the device developer's reference, against `fieldline up`:
it provisions itself, publishes, applies its configuration and answers a command."""

from __future__ import annotations

import asyncio
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
    finally:
        device.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(device.communicate, timeout=30)
    assert device.returncode == 0, output.decode()
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600

    async def offline() -> None:
        shown = await api_get(platform, f"/api/v1/devices/{device_id}")
        assert shown["status"] == "offline", shown

    await eventually(offline)
