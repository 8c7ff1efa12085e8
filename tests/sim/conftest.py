"""A private Mosquitto per test, and a subscriber that records what a platform would see."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gmqtt
import orjson
import pytest
from gmqtt.mqtt.constants import MQTTv311

from fieldline.ops.sockets import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int


@contextlib.contextmanager
def running_mosquitto(
    directory: Path, *, passwords: dict[str, str] | None = None
) -> Iterator[Broker]:
    """Mosquitto on a free port; anonymous, or only the given users when `passwords` is set."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed; scripts/test installs it")
    port = free_port("127.0.0.1")
    access = "allow_anonymous true\n"
    if passwords is not None:
        password_file = directory / "passwords"
        password_file.touch()
        for user, password in passwords.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(password_file), user, password], check=True
            )
        # Run as root, mosquitto drops to its own user, which cannot read pytest's tmp dir.
        access = f"allow_anonymous false\npassword_file {password_file}\nuser root\n"
    conf = directory / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"{access}"
        "persistence false\n"
        # The test subscriber must not lose anything to the default queue cap.
        "max_queued_messages 100000\n"
        "log_dest stderr\n"
        "log_type error\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 5.0
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                stderr, _ = proc.communicate()
                raise RuntimeError(f"mosquitto did not start: {stderr!r}") from None
            time.sleep(0.02)
    try:
        yield Broker("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_mosquitto(tmp_path) as running:
        yield running


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes

    @property
    def device_id(self) -> str:
        return self.topic.split("/")[1]

    @property
    def kind(self) -> str:
        return self.topic.split("/", 2)[2]

    def json(self) -> Any:
        return orjson.loads(self.payload)


class Subscriber:
    """Everything published under `devices/#`, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self._client = gmqtt.Client(f"test-subscriber-{time.monotonic_ns()}")
        self._client.on_message = self._on_message

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        self.messages.append(Received(topic, payload))
        return 0

    async def start(
        self, broker: Broker, *, username: str | None = None, password: str | None = None
    ) -> None:
        if username is not None:
            self._client.set_auth_credentials(username, password)
        subscribed = asyncio.Event()
        self._client.on_subscribe = lambda *args: subscribed.set()
        await self._client.connect(broker.host, broker.port, version=MQTTv311)
        self._client.subscribe("devices/#", qos=1)
        await asyncio.wait_for(subscribed.wait(), 5)

    async def stop(self) -> None:
        await self._client.disconnect()

    def of_kind(self, kind: str) -> list[Received]:
        return [m for m in self.messages if m.kind == kind]

    async def settle(self, *, quiet_s: float = 0.3, timeout_s: float = 5.0) -> None:
        """Wait until nothing new has arrived for `quiet_s` (messages in flight land)."""
        deadline = time.monotonic() + timeout_s
        seen = -1
        while len(self.messages) != seen and time.monotonic() < deadline:
            seen = len(self.messages)
            await asyncio.sleep(quiet_s)


@pytest.fixture
async def subscriber(broker: Broker) -> AsyncIterator[Subscriber]:
    sub = Subscriber()
    await sub.start(broker)
    try:
        yield sub
    finally:
        await sub.stop()
