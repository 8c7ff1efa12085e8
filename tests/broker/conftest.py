"""Real brokers on free ports in temporary directories, and an MQTT probe client."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError

from fieldline.broker.base import Broker, BrokerEndpoint
from fieldline.broker.embedded import AmqttBroker
from fieldline.broker.mosquitto import ManagedMosquitto
from fieldline.domain.devices import DeviceAccess
from fieldline.domain.topics import TopicScheme
from fieldline.security.passwords import generate_secret, hash_secret
from tests.mqtt_clients import NoReconnectClient

TOPICS = TopicScheme("devices")
needs_mosquitto = pytest.mark.usefixtures("mosquitto_installed")


@dataclass(frozen=True, slots=True)
class Credential:
    device: DeviceAccess
    password: str

    @property
    def device_id(self) -> str:
        return self.device.device_id


def credential(device_id: str, *, enabled: bool = True) -> Credential:
    password = generate_secret()
    # Few iterations keep the suite fast; the broker treats any count alike.
    secret_hash = hash_secret(password, iterations=1_000).encode()
    return Credential(DeviceAccess(device_id, secret_hash, enabled), password)


async def eventually(check: Callable[[], bool], *, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class Probe:
    """An MQTT 3.1.1 client that records what it receives and whether it was dropped.

    Its client id is `client_id`, else the username it connects with (a device's client
    id is its device id: brokers refuse any other), else a random one.
    """

    def __init__(self, client_id: str | None = None) -> None:
        self._client_id = client_id
        self.messages: list[tuple[str, bytes]] = []
        self.dropped = asyncio.Event()
        self.client = self._new_client(client_id)

    def _new_client(
        self, client_id: str | None, *, clean_session: bool = True
    ) -> NoReconnectClient:
        client = NoReconnectClient(
            f"probe-{uuid.uuid4().hex[:10]}" if client_id is None else client_id,
            clean_session=clean_session,
        )
        client.on_message = self._on_message
        client.on_disconnect = lambda *args: self.dropped.set()
        return client

    def _on_message(
        self, client: object, topic: str, payload: bytes, qos: int, props: object
    ) -> int:
        self.messages.append((topic, payload))
        return 0

    async def connect(
        self,
        endpoint: BrokerEndpoint,
        username: str | None,
        password: str | None,
        *,
        clean_session: bool = True,
    ) -> None:
        self.client = self._new_client(
            self._client_id if self._client_id is not None else username,
            clean_session=clean_session,
        )
        if username is not None:
            self.client.set_auth_credentials(username, password)
        await asyncio.wait_for(
            self.client.connect(endpoint.host, endpoint.port, version=MQTTv311, keepalive=30), 5
        )
        self.dropped.clear()

    async def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        await asyncio.sleep(0.1)  # SUBACK round trip on loopback

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)

    def got(self, topic: str, payload: bytes) -> bool:
        return (topic, payload) in self.messages

    async def close(self) -> None:
        """Close the socket, also after the broker dropped or refused the connection."""
        with contextlib.suppress(Exception):
            await self.client.disconnect()


@pytest.fixture
async def probes() -> AsyncIterator[Callable[..., Awaitable[Probe]]]:
    opened: list[Probe] = []

    async def open_probe(
        endpoint: BrokerEndpoint,
        username: str | None,
        password: str | None,
        *,
        client_id: str | None = None,
        clean_session: bool = True,
    ) -> Probe:
        probe = Probe(client_id)
        await probe.connect(endpoint, username, password, clean_session=clean_session)
        opened.append(probe)
        return probe

    yield open_probe
    for probe in opened:
        await probe.close()


async def refused(
    endpoint: BrokerEndpoint,
    username: str | None,
    password: str | None,
    *,
    client_id: str | None = None,
    clean_session: bool = True,
) -> bool:
    probe = Probe(client_id)
    try:
        await probe.connect(endpoint, username, password, clean_session=clean_session)
    except (MQTTConnectError, ConnectionError, TimeoutError):
        return True
    finally:
        await probe.close()  # a refused CONNECT leaves gmqtt's socket open otherwise
    return False


@pytest.fixture
def alice() -> Credential:
    return credential("alice")


@pytest.fixture
def bob() -> Credential:
    return credential("bob")


async def start_broker(kind: str, data_dir: Path, devices: list[DeviceAccess]) -> Broker:
    broker: Broker
    if kind == "mosquitto":
        broker = ManagedMosquitto(data_dir=data_dir, host="127.0.0.1", port=0, topics=TOPICS)
    else:
        broker = AmqttBroker(host="127.0.0.1", port=0, topics=TOPICS)
    await broker.start(devices)
    return broker


@pytest.fixture(params=["mosquitto", "amqtt"])
async def broker(
    request: pytest.FixtureRequest, tmp_path: Path, alice: Credential, bob: Credential
) -> AsyncIterator[Broker]:
    if request.param == "mosquitto":
        request.getfixturevalue("mosquitto_installed")
    started = await start_broker(request.param, tmp_path, [alice.device, bob.device])
    yield started
    await started.stop()
