"""The Node-RED peer of `fieldline bench ingest` stores exactly what devices publish.

Real Mosquitto, PostgreSQL and Node-RED: devices publish the benchmark's
telemetry at QoS 1, and the peer's table must hold every message once, five
points each, including what the broker queued while Node-RED was stopped.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.storage import PersistentStorage

from fieldline.bench.nodered import NodeRedPeer
from fieldline.bench.stack import READER, Stack, running_stack
from tests.mqtt_clients import NoReconnectClient

pytestmark = [pytest.mark.usefixtures("mosquitto_installed"), pytest.mark.timeout(240)]

DEVICES = ["nr-1", "nr-2", "nr-3"]
METRICS = 5


class Device:
    """A device publishing the benchmark's telemetry; `sent()` waits for every PUBACK."""

    def __init__(self, device_id: str, password: str) -> None:
        self.device_id = device_id
        self.seq = 0
        self._storage = PersistentStorage()
        # Its client id is its device id: the broker refuses any other.
        self._client = NoReconnectClient(device_id, persistent_storage=self._storage)
        self._client.set_auth_credentials(device_id, password)

    async def connect(self, port: int) -> None:
        await self._client.connect("127.0.0.1", port, version=MQTTv311)

    def publish(self) -> str:
        self.seq += 1
        message_id = f"{self.device_id}-{self.seq}"
        reading = {
            "message_id": message_id,
            "timestamp": time.time(),
            "sensors": {
                "temperature": 21.5,
                "humidity": 40.1,
                "pressure": 1013.2,
                "battery": 3.71,
                "co2": 400 + self.seq,
            },
        }
        self._client.publish(f"devices/{self.device_id}/telemetry", json.dumps(reading), qos=1)
        return message_id

    async def sent(self) -> None:
        await asyncio.wait_for(self._storage.wait_empty(), 30)

    async def disconnect(self) -> None:
        await self._client.disconnect()


async def publish(devices: list[Device], per_device: int) -> set[str]:
    ids = set()
    for _ in range(per_device):
        ids |= {device.publish() for device in devices}
        await asyncio.sleep(0.005)
    for device in devices:
        await device.sent()
    return ids


async def wait_stored(peer: NodeRedPeer, expected: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while (stored := await peer.stored_messages()) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return stored


async def subscribed(peer: NodeRedPeer, device: Device, stored: int) -> tuple[int, set[str]]:
    """Probe messages, one every 0.2 s, until the peer has stored one (it is subscribed);
    answers how many messages it holds once the last probe has had 1 s to arrive, and the
    probes sent (those before it subscribed are not for it)."""
    probes = set()
    deadline = time.monotonic() + 30
    while await peer.stored_messages() == stored:
        assert time.monotonic() < deadline, "the peer never subscribed again"
        probes.add(device.publish())
        await device.sent()
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    return await peer.stored_messages(), probes


def rows(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT message_id, device_id, metric, value, time FROM nodered_readings"
        ).fetchall()


def peer_for(stack: Stack, directory: Path) -> NodeRedPeer:
    return NodeRedPeer(
        directory,
        mqtt_host="127.0.0.1",
        mqtt_port=stack.mqtt_port,
        username=READER,
        password=stack.reader_password,
        database_url=stack.database_url,
    )


async def test_peer_stores_every_published_message_once(workdir: Path) -> None:
    async with running_stack(workdir / "stack") as stack:
        credentials = await stack.deployment.register(DEVICES)
        peer = peer_for(stack, workdir / "nodered")
        await asyncio.to_thread(peer.install)
        await peer.start()
        devices = [Device(d, credentials[d]["password"]) for d in DEVICES]
        for device in devices:
            await device.connect(stack.mqtt_port)
        try:
            # Its first session subscribes a moment after it starts (CI once lost 3 of 300
            # published before): counted from its first stored probe, as after a new session.
            first, first_probes = await subscribed(peer, devices[0], 0)
            while_running = await publish(devices, 100)
            expected = first + len(while_running)
            assert await wait_stored(peer, expected) == expected

            # The persistent session: the broker queues what arrives while Node-RED is down.
            await peer.stop()
            while_stopped = await publish(devices, 50)
            await peer.start()
            published = while_running | while_stopped
            expected = first + len(published)
            assert await wait_stored(peer, expected) == expected
            assert await peer.stored_points() == expected * METRICS

            # Unless the session is ended: then nothing is queued for the peer.
            await peer.stop(end_session=True)
            while_gone = await publish(devices, 20)
            await peer.start()
            # Its new session subscribes a moment after it starts: what is published
            # before is not for it either, so it is counted from its first stored probe.
            base, probes = await subscribed(peer, devices[0], expected)
            after = await publish(devices, 10)
            assert await wait_stored(peer, base + len(after)) == base + len(after)
        finally:
            for device in devices:
                await device.disconnect()
            await peer.stop()

        stored = rows(stack.database_url)
        assert not {row[0] for row in stored} & while_gone
        # The probes sent once it had subscribed again are stored like any message.
        published |= after | ({row[0] for row in stored} & (probes | first_probes))
        assert {row[0] for row in stored} == published
        assert len(stored) == len(published) * METRICS, "a message stored twice or in part"
        assert {(row[0], row[1]) for row in stored} == {
            (message_id, message_id.rsplit("-", 1)[0]) for message_id in published
        }
        co2 = {row[0]: row[3] for row in stored if row[2] == "co2"}
        assert co2["nr-2-7"] == 407
        assert all(abs(row[4].timestamp() - time.time()) < 120 for row in stored)
