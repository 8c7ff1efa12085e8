"""The in-process amqtt broker keeps the QoS 1 promise ingest relies on.

Stock amqtt 0.12 loses messages here (broker/amqtt_server.py says how); these
tests run fieldline's amqtt with real MQTT clients and count.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.storage import PersistentStorage

from fieldline.broker.embedded import AmqttBroker
from tests.broker.conftest import TOPICS, Credential, eventually
from tests.mqtt_clients import NoReconnectClient


class Subscriber:
    """The service account on a persistent session, as ingest connects."""

    def __init__(self, broker: AmqttBroker, client_id: str, *, acknowledge: bool) -> None:
        self.payloads: list[bytes] = []
        self._release = asyncio.Event()
        self._acknowledge = acknowledge
        self.client = NoReconnectClient(
            client_id, clean_session=False, optimistic_acknowledgement=False
        )
        self.client.set_auth_credentials(broker.service.username, broker.service.password)
        self.client.on_message = self._on_message
        self._endpoint = broker.endpoint

    async def _on_message(self, *args: Any) -> int:
        self.payloads.append(args[2])
        if not self._acknowledge:
            await self._release.wait()  # gmqtt sends the PUBACK once this returns
        return 0

    async def connect(self) -> Subscriber:
        await self.client.connect(self._endpoint.host, self._endpoint.port, version=MQTTv311)
        self.client.subscribe("devices/+/telemetry", qos=1)
        await asyncio.sleep(0.1)  # SUBACK round trip on loopback
        return self

    async def close(self) -> None:
        self._release.set()
        with contextlib.suppress(Exception):
            await self.client.disconnect()


async def publisher(
    broker: AmqttBroker, device: Credential
) -> tuple[gmqtt.Client, PersistentStorage]:
    unacknowledged = PersistentStorage()  # what the broker has not acknowledged yet
    # No reconnect: gmqtt's retry after the broker stops leaves a socket nobody closes.
    client = NoReconnectClient(device.device_id, persistent_storage=unacknowledged)
    client.set_auth_credentials(device.device_id, device.password)
    endpoint = broker.endpoint
    await client.connect(endpoint.host, endpoint.port, version=MQTTv311)
    return client, unacknowledged


@pytest.fixture
async def amqtt(alice: Credential) -> AsyncIterator[AmqttBroker]:
    broker = AmqttBroker(host="127.0.0.1", port=0, topics=TOPICS, max_inflight=5)
    await broker.start([alice.device])
    yield broker
    await broker.stop()


async def test_what_was_acknowledged_is_delivered_after_the_publisher_leaves(
    alice: Credential,
) -> None:
    # amqtt acknowledges a publish before routing it; a burst leaves many queued.
    broker = AmqttBroker(host="127.0.0.1", port=0, topics=TOPICS)
    await broker.start([alice.device])
    subscriber = await Subscriber(broker, "ingest-burst", acknowledge=True).connect()
    try:
        client, unacknowledged = await publisher(broker, alice)
        sent = [b'{"n": %d}' % n for n in range(5_000)]
        for payload in sent:
            client.publish("devices/alice/telemetry", payload, qos=1)
        assert await eventually(lambda: unacknowledged.is_empty, within=30)
        await client.disconnect()
        assert await eventually(lambda: len(subscriber.payloads) >= len(sent), within=30)
        await asyncio.sleep(0.2)
        assert sorted(subscriber.payloads) == sorted(sent)
    finally:
        await subscriber.close()
        await broker.stop()


async def test_unacknowledged_messages_come_again_on_the_next_connection(
    amqtt: AmqttBroker, alice: Credential
) -> None:
    stalled = await Subscriber(amqtt, "ingest-1", acknowledge=False).connect()
    client, unacknowledged = await publisher(amqtt, alice)
    sent = [b'{"n": %d}' % n for n in range(20)]
    for payload in sent:
        client.publish("devices/alice/telemetry", payload, qos=1)
    assert await eventually(lambda: unacknowledged.is_empty)
    # No more than max_inflight unacknowledged at once.
    assert await eventually(lambda: len(stalled.payloads) == 5)
    await asyncio.sleep(0.3)
    assert stalled.payloads == sent[:5]
    await stalled.close()  # gone without acknowledging (what a killed ingest does)

    await asyncio.sleep(0.5)  # the broker keeps queueing for the absent session
    client.publish("devices/alice/telemetry", b'{"n": "later"}', qos=1)
    subscriber = await Subscriber(amqtt, "ingest-1", acknowledge=True).connect()
    try:
        expected = [*sent, b'{"n": "later"}']
        assert await eventually(lambda: len(subscriber.payloads) >= len(expected))
        await asyncio.sleep(0.3)
        assert subscriber.payloads == expected  # in order, the unacknowledged first
    finally:
        await subscriber.close()
        await client.disconnect()
