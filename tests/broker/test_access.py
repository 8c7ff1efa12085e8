"""Device access rules (SPEC §3, §9) on every broker fieldline can run itself."""

from __future__ import annotations

import dataclasses

from fieldline.broker.base import Broker
from fieldline.security.passwords import generate_secret, hash_secret

from .conftest import TOPICS, Credential, credential, eventually, refused


async def test_device_telemetry_reaches_the_service(
    broker: Broker, probes, alice: Credential
) -> None:
    service = await probes(broker.endpoint, broker.service.username, broker.service.password)
    for topic in TOPICS.ingest_filters():
        await service.subscribe(topic)
    device = await probes(broker.endpoint, alice.device_id, alice.password)
    topic = TOPICS.device_publishes(alice.device_id)[0]

    device.publish(topic, b'{"temp": 21.5}')

    assert await eventually(lambda: service.got(topic, b'{"temp": 21.5}'))


async def test_bad_credentials_and_anonymous_are_refused(broker: Broker, alice: Credential) -> None:
    assert await refused(broker.endpoint, alice.device_id, "wrong-password")
    assert await refused(broker.endpoint, "nobody", alice.password)
    assert await refused(broker.endpoint, None, None)
    assert not await refused(broker.endpoint, alice.device_id, alice.password)


async def test_device_cannot_publish_as_another(
    broker: Broker, probes, alice: Credential, bob: Credential
) -> None:
    service = await probes(broker.endpoint, broker.service.username, broker.service.password)
    await service.subscribe(f"{TOPICS.prefix}/+/telemetry")
    spoofer = await probes(broker.endpoint, alice.device_id, alice.password)
    bob_topic = f"{TOPICS.prefix}/{bob.device_id}/telemetry"
    marker_topic = f"{TOPICS.prefix}/{alice.device_id}/telemetry"

    spoofer.publish(bob_topic, b"spoofed")
    spoofer.publish(marker_topic, b"marker")
    await eventually(lambda: service.got(marker_topic, b"marker") or spoofer.dropped.is_set())
    if not service.got(marker_topic, b"marker"):  # mosquitto may drop the offender
        again = await probes(broker.endpoint, alice.device_id, alice.password)
        again.publish(marker_topic, b"marker")

    assert await eventually(lambda: service.got(marker_topic, b"marker"))
    assert not service.got(bob_topic, b"spoofed")


async def test_device_receives_only_its_own_downlink(
    broker: Broker, probes, alice: Credential, bob: Credential
) -> None:
    service = await probes(broker.endpoint, broker.service.username, broker.service.password)
    snoop = await probes(broker.endpoint, alice.device_id, alice.password)
    await snoop.subscribe(f"{TOPICS.prefix}/{bob.device_id}/config")
    await snoop.subscribe(f"{TOPICS.prefix}/+/config")
    await snoop.subscribe(f"{TOPICS.prefix}/{alice.device_id}/config")
    owner = await probes(broker.endpoint, bob.device_id, bob.password)
    await owner.subscribe(f"{TOPICS.prefix}/{bob.device_id}/config")
    bob_config = f"{TOPICS.prefix}/{bob.device_id}/config"
    alice_config = f"{TOPICS.prefix}/{alice.device_id}/config"

    service.publish(bob_config, b'{"version": 1}')
    service.publish(alice_config, b'{"version": 7}')

    assert await eventually(lambda: owner.got(bob_config, b'{"version": 1}'))
    assert await eventually(lambda: snoop.got(alice_config, b'{"version": 7}'))
    assert [t for t, _ in snoop.messages] == [alice_config]


async def test_disabling_drops_the_session_and_refuses_reconnect(
    broker: Broker, probes, alice: Credential
) -> None:
    device = await probes(broker.endpoint, alice.device_id, alice.password)

    await broker.apply(dataclasses.replace(alice.device, enabled=False))

    assert await eventually(device.dropped.is_set)
    assert await refused(broker.endpoint, alice.device_id, alice.password)

    await broker.apply(alice.device)
    assert not await refused(broker.endpoint, alice.device_id, alice.password)


async def test_rotation_drops_old_session_and_only_new_secret_works(
    broker: Broker, probes, alice: Credential
) -> None:
    device = await probes(broker.endpoint, alice.device_id, alice.password)
    new_password = generate_secret()
    rotated = dataclasses.replace(
        alice.device, secret_hash=hash_secret(new_password, iterations=1_000).encode()
    )

    await broker.apply(rotated, password=new_password)

    assert await eventually(device.dropped.is_set)
    assert await refused(broker.endpoint, alice.device_id, alice.password)
    assert not await refused(broker.endpoint, alice.device_id, new_password)


async def test_removal_drops_the_session_and_refuses_reconnect(
    broker: Broker, probes, alice: Credential
) -> None:
    device = await probes(broker.endpoint, alice.device_id, alice.password)

    await broker.remove(alice.device_id)

    assert await eventually(device.dropped.is_set)
    assert await refused(broker.endpoint, alice.device_id, alice.password)


async def test_new_device_connects_at_once(broker: Broker, probes) -> None:
    carol = credential("carol")
    assert await refused(broker.endpoint, carol.device_id, carol.password)

    await broker.apply(carol.device, password=carol.password)

    service = await probes(broker.endpoint, broker.service.username, broker.service.password)
    await service.subscribe(f"{TOPICS.prefix}/+/heartbeat")
    device = await probes(broker.endpoint, carol.device_id, carol.password)
    device.publish(f"{TOPICS.prefix}/carol/heartbeat", b"1")
    assert await eventually(lambda: service.got(f"{TOPICS.prefix}/carol/heartbeat", b"1"))
    assert await broker.healthy()
