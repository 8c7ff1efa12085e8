"""A device connects only with its own id as client id; fieldline's client ids are its own.

Against each broker fieldline runs (managed Mosquitto with dynamic security, in-process
amqtt): a CONNECT naming another device's id, one of fieldline's own ids, or none is
refused, and the client connected under that id keeps its session and gets its messages.
Before, amqtt deleted ingest's subscriptions for one refused CONNECT under its id (nothing
stored for anyone afterwards), and Mosquitto let any device knock another offline.
"""

from __future__ import annotations

import pytest

from fieldline.broker.base import Broker, BrokerEndpoint, BrokerError, ServiceAccount
from fieldline.broker.control import admin_client_id
from fieldline.broker.publisher import publisher_client_id
from fieldline.broker.unmanaged import UnmanagedBroker
from fieldline.domain.devices import is_reserved_client_id, is_valid_device_id
from fieldline.runtime.ingest_runner import INGEST_CLIENT_PREFIX

from .conftest import TOPICS, Credential, credential, eventually, refused

INGEST_ID = INGEST_CLIENT_PREFIX + "1"


async def test_a_device_cannot_connect_under_another_devices_id(
    broker: Broker, probes, alice: Credential, bob: Credential
) -> None:
    victim = await probes(broker.endpoint, alice.device_id, alice.password)
    downlink = f"{TOPICS.prefix}/{alice.device_id}/commands"
    await victim.subscribe(downlink)

    for clean_session in (True, False):
        assert await refused(
            broker.endpoint,
            bob.device_id,
            bob.password,
            client_id=alice.device_id,
            clean_session=clean_session,
        )
    # No client id: the broker would make one up, which is not the device id either.
    assert await refused(broker.endpoint, bob.device_id, bob.password, client_id="")
    assert not await refused(broker.endpoint, bob.device_id, bob.password)

    service = await probes(broker.endpoint, broker.service.username, broker.service.password)
    service.publish(downlink, b'{"command_id": "1", "name": "ping"}')
    assert await eventually(lambda: victim.got(downlink, b'{"command_id": "1", "name": "ping"}'))
    assert not victim.dropped.is_set()


async def test_no_device_can_claim_ingests_client_id(
    broker: Broker, probes, alice: Credential, bob: Credential
) -> None:
    ingest = await probes(
        broker.endpoint,
        broker.service.username,
        broker.service.password,
        client_id=INGEST_ID,
        clean_session=False,
    )
    await ingest.subscribe(f"{TOPICS.prefix}/+/telemetry")

    for clean_session in (True, False):
        assert await refused(
            broker.endpoint,
            bob.device_id,
            bob.password,
            client_id=INGEST_ID,
            clean_session=clean_session,
        )
        # Not even a refused password may touch the session it names.
        assert await refused(
            broker.endpoint, "nobody", "guess", client_id=INGEST_ID, clean_session=clean_session
        )

    device = await probes(broker.endpoint, alice.device_id, alice.password)
    topic = f"{TOPICS.prefix}/{alice.device_id}/telemetry"
    device.publish(topic, b'{"temperature": 21.5}')
    assert await eventually(lambda: ingest.got(topic, b'{"temperature": 21.5}'))
    assert not ingest.dropped.is_set()


async def test_a_device_under_one_of_fieldlines_ids_is_never_installed(broker: Broker) -> None:
    thief = credential(INGEST_ID)
    with pytest.raises(BrokerError, match="fieldline's own MQTT client ids"):
        await broker.apply(thief.device, password=thief.password)
    assert await refused(broker.endpoint, thief.device_id, thief.password)


async def test_nor_is_it_registered_with_a_broker_fieldline_does_not_administer() -> None:
    emqx = UnmanagedBroker(
        endpoint=BrokerEndpoint(host="127.0.0.1", port=1883),
        service=ServiceAccount(username="fieldline-ingest", password="not-used-here"),
    )
    with pytest.raises(BrokerError, match="fieldline's own MQTT client ids"):
        await emqx.apply(credential(INGEST_ID).device)


def test_fieldlines_own_client_ids_are_no_device_ids() -> None:
    for client_id in (INGEST_ID, publisher_client_id("api"), admin_client_id()):
        assert is_reserved_client_id(client_id)
        assert not is_valid_device_id(client_id)
    assert is_valid_device_id("greenhouse-7")
