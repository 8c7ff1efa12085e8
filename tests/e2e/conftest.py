"""`fieldline up` as a real subprocess on free ports, used as a user would use it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from gmqtt.mqtt.constants import MQTTv311

from fieldline.ops.sockets import free_port
from tests.conftest import PgServer
from tests.mqtt_clients import NoReconnectClient

ADMIN_PASSWORD = "e2e-admin-password"
START_TIMEOUT = 60.0
T = TypeVar("T")


@dataclass
class Platform:
    variant: str
    api_url: str
    mqtt_port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    headers: dict[str, str] = field(default_factory=dict)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.api_url, headers=self.headers, timeout=30)

    async def register(self, device_id: str, **extra: Any) -> str:
        """Register a device through the API; answer its MQTT password."""
        async with self.http() as http:
            answer = await http.post("/api/v1/devices", json={"device_id": device_id, **extra})
        assert answer.status_code == 201, answer.text
        mqtt = answer.json()["mqtt"]
        assert (mqtt["username"], mqtt["port"]) == (device_id, self.mqtt_port)
        return str(mqtt["password"])


def start_platform(
    variant: str,
    env: dict[str, str],
    data_dir: Path,
    *,
    http_port: int | None = None,
    mqtt_port: int | None = None,
) -> Platform:
    """`fieldline up` on free ports (or those given: a restart keeps its devices' port)."""
    http_port = http_port or free_port("127.0.0.1")
    mqtt_port = mqtt_port or free_port("127.0.0.1")
    log = data_dir.parent / f"{variant}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fieldline",
                "up",
                "--data-dir",
                str(data_dir),
                "--http-port",
                str(http_port),
                "--mqtt-port",
                str(mqtt_port),
            ],
            env={
                **os.environ,
                "FIELDLINE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "FIELDLINE_LOG_FORMAT": "json",
                **env,
            },
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    platform = Platform(variant, f"http://127.0.0.1:{http_port}", mqtt_port, data_dir, process, log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise AssertionError(
                f"fieldline up exited {process.returncode}:\n{log.read_text()[-4000:]}"
            )
        try:
            if httpx.get(f"{platform.api_url}/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_platform(platform)
            raise AssertionError(f"fieldline up not ready in time:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    token = httpx.post(
        f"{platform.api_url}/api/v1/auth/login",
        json={"username": "admin", "password": ADMIN_PASSWORD},
    ).json()
    platform.headers = {"Authorization": f"Bearer {token['access_token']}"}
    return platform


def stop_platform(platform: Platform) -> int:
    platform.process.send_signal(signal.SIGTERM)
    try:
        return platform.process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        platform.process.kill()
        platform.process.wait()
        return -9


@pytest.fixture(scope="module", params=["mosquitto+postgresql15", "amqtt+embedded"])
def platform(request: pytest.FixtureRequest) -> Iterator[Platform]:
    """Once with managed Mosquitto on external PostgreSQL 15, once with amqtt on embedded."""
    variant: str = request.param
    tmp = Path(tempfile.mkdtemp(prefix=f"fieldline-e2e-{variant.replace('+', '-')}-"))
    env = {"FIELDLINE_BROKER": variant.split("+", maxsplit=1)[0]}
    pg: PgServer | None = None
    database = None
    if variant.endswith("postgresql15"):
        pg = request.getfixturevalue("pg15")
        database = pg.create_database()
        env["DATABASE_URL"] = pg.url_for(database)
    running = start_platform(variant, env, tmp / "data")
    try:
        yield running
    finally:
        code = stop_platform(running)
        if pg is not None and database is not None:
            pg.drop_database(database)
        shutil.rmtree(tmp, ignore_errors=True)
        assert code == 0, f"fieldline up exited {code} on SIGTERM"


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 15.0, interval: float = 0.1
) -> T:
    """Poll `check` until it stops raising AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


class DeviceClient:
    """A device as firmware would be: its own MQTT connection with its own credentials."""

    def __init__(self, device_id: str, password: str, port: int) -> None:
        self.device_id = device_id
        self.password = password
        self.port = port
        self.disconnected = asyncio.Event()
        self.received: list[tuple[str, bytes]] = []
        self.suback: list[int] = []
        self.subscribed = asyncio.Event()
        self.client = NoReconnectClient(device_id)  # its client id: brokers refuse any other
        self.client.set_auth_credentials(device_id, password)
        self.client.set_config({"reconnect_retries": 0})
        self.client.on_disconnect = lambda *_: self.disconnected.set()
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_message(self, _c: Any, topic: str, payload: bytes, _q: int, _p: Any) -> int:
        self.received.append((topic, payload))
        return 0

    def _on_subscribe(self, _c: Any, _mid: int, qos: tuple[int, ...], _p: Any) -> None:
        self.suback.extend(qos)
        self.subscribed.set()

    async def connect(self) -> DeviceClient:
        _open_clients.append(self)  # closed after the test, whatever happens
        try:
            await asyncio.wait_for(
                self.client.connect("127.0.0.1", self.port, version=MQTTv311), timeout=10
            )
        except BaseException:
            await self.close()  # a refused CONNECT leaves gmqtt's socket open otherwise
            raise
        return self

    def publish(self, kind: str, payload: bytes | str, *, device_id: str | None = None) -> None:
        topic = f"devices/{device_id or self.device_id}/{kind}"
        self.client.publish(topic, payload, qos=1)

    async def subscribe(self, topic: str) -> int:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        await asyncio.wait_for(self.subscribed.wait(), timeout=10)
        return self.suback[-1]

    async def close(self) -> None:
        """Close the socket, also after the broker dropped the connection or refused it."""
        with contextlib.suppress(Exception):
            await self.client.disconnect()


_open_clients: list[DeviceClient] = []


@pytest.fixture(autouse=True)
async def _close_device_clients() -> AsyncIterator[None]:
    yield
    while _open_clients:
        await _open_clients.pop().close()
