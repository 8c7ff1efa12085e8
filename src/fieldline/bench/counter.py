"""The bare subscriber: the broker's delivery ceiling, measured with the same load.

One process, one gmqtt connection (the fastest Python client MEASURED.md found)
on uvloop, subscribed at QoS 1 to every device's telemetry as fieldline's
ingest is. It only counts: whatever rate it reaches is what the broker can
deliver to one Python consumer on this machine, so fieldline's stored rate is
reported as a fraction of it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50

TOPIC = "devices/+/telemetry"
PUBLISH_EVERY_S = 0.1


@dataclass
class Counted:
    messages: int
    first: float  # wall clock of the first message
    last: float  # wall clock of the last message


@dataclass(frozen=True)
class _Channel:
    """What the counting process shares with the benchmark (multiprocessing objects)."""

    count: Any
    first: Any
    last: Any
    subscribed: Any
    halt: Any

    def publish(self, seen: int, first: float, last: float) -> None:
        self.count.value, self.first.value, self.last.value = seen, first, last


class BareSubscriber:
    """Start it, let the load run, read `count`, stop it."""

    def __init__(self, *, port: int, username: str, password: str, host: str = "127.0.0.1") -> None:
        ctx = multiprocessing.get_context("spawn")
        self._channel = _Channel(
            count=ctx.Value("q", 0),
            first=ctx.Value("d", 0.0),
            last=ctx.Value("d", 0.0),
            subscribed=ctx.Event(),
            halt=ctx.Event(),
        )
        self._process = ctx.Process(
            target=_main,
            args=(host, port, username, password, self._channel),
            name="fieldline-bench-counter",
            daemon=True,
        )

    @property
    def pid(self) -> int:
        if self._process.pid is None:
            raise RuntimeError("the bare subscriber is not running")
        return self._process.pid

    async def start(self) -> None:
        self._process.start()
        if not await asyncio.to_thread(self._channel.subscribed.wait, 30):
            raise RuntimeError("the bare subscriber did not subscribe within 30 s")

    def counted(self) -> Counted:
        channel = self._channel
        return Counted(channel.count.value, channel.first.value, channel.last.value)

    async def stop(self) -> None:
        self._channel.halt.set()
        await asyncio.to_thread(self._process.join, 10)


def _main(host: str, port: int, username: str, password: str, channel: _Channel) -> None:
    import uvloop

    uvloop.run(_count(host, port, username, password, channel))


async def _count(host: str, port: int, username: str, password: str, channel: _Channel) -> None:
    seen = 0
    first_at = 0.0
    last_at = 0.0

    def on_message(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        nonlocal seen, first_at, last_at
        seen += 1
        last_at = time.time()
        if not first_at:
            first_at = last_at
        return 0  # PUBACK

    def on_subscribe(client: Any, mid: int, qos: Any, properties: Any) -> None:
        channel.subscribed.set()

    client = gmqtt.Client(f"bench-counter-{time.time_ns()}", clean_session=True)
    client.set_auth_credentials(username, password)
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    await client.connect(host, port, version=MQTTv50, keepalive=60)
    client.subscribe(TOPIC, qos=1)
    while not channel.halt.is_set():
        await asyncio.sleep(PUBLISH_EVERY_S)
        channel.publish(seen, first_at, last_at)
    channel.publish(seen, first_at, last_at)
    await client.disconnect()
