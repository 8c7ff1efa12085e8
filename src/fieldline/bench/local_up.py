"""A `fieldline up` a benchmark starts in a directory of its own, as a user would.

Started with `python -m fieldline up` on free ports, its output in `fieldline.log` of that
directory; ready when `/ready` answers 200. Per-device rate limits are off: a benchmark
publishes faster than a device's default limit, and its counts must be exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import httpx

from fieldline.client import ApiAccess, open_client
from fieldline.ops.sockets import free_port

ADMIN_PASSWORD = "bench-admin-password"
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LocalUp:
    process: subprocess.Popen[bytes]
    api: str
    mqtt_port: int
    data_dir: Path

    def postgres_pid(self) -> int:
        """The embedded PostgreSQL's postmaster (only when up runs its own)."""
        return int((self.data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])


def start_up(directory: Path, *, broker: str, env: dict[str, str]) -> LocalUp:
    """`fieldline up` with `broker`, once ready; blocks (call it in a thread)."""
    http_port, mqtt_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    with (directory / "fieldline.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "fieldline", "up", "--data-dir", str(directory / "data"),
             "--http-port", str(http_port), "--mqtt-port", str(mqtt_port), "--broker", broker],
            env={
                **os.environ,
                "FIELDLINE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "FIELDLINE_LOG_LEVEL": os.environ.get("FIELDLINE_LOG_LEVEL", "WARNING"),
                "FIELDLINE_DEVICE_RATE_LIMIT": "0",
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    up = LocalUp(process, f"http://127.0.0.1:{http_port}", mqtt_port, directory / "data")
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{up.api}/ready", timeout=1).status_code == 200:
                return up
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise click.ClickException(f"fieldline up did not start; see {directory}/fieldline.log")
        time.sleep(0.2)


async def stop_up(up: LocalUp, within: float) -> bool:
    """SIGTERM, then SIGKILL past `within` seconds; whether it stopped by itself."""
    up.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(up.process.wait, within)
    except subprocess.TimeoutExpired:
        up.process.kill()
        await asyncio.to_thread(up.process.wait)
        return False
    return True


async def register_devices(
    api: str, password: str, prefix: str, count: int
) -> list[tuple[str, str]]:
    """`count` devices registered through the API as admin: (device id, MQTT password)."""
    http = await open_client(ApiAccess(url=api, username="admin", password=password))
    devices = []
    try:
        for n in range(count):
            answer = await http.post("/api/v1/devices", json={"device_id": f"{prefix}-{n:05d}"})
            answer.raise_for_status()
            body = answer.json()
            devices.append((body["device_id"], body["mqtt"]["password"]))
    finally:
        await http.aclose()
    return devices
