"""fieldline's downlink publisher on real brokers: acknowledged means the broker has it."""

from __future__ import annotations

import pytest

from fieldline.broker.base import Broker
from fieldline.broker.publisher import Publisher, PublishError
from tests.broker.conftest import TOPICS, Credential, Probe, eventually


async def test_a_device_receives_what_was_published_retained(
    broker: Broker, alice: Credential, probes
) -> None:
    publisher = Publisher(broker.endpoint, broker.service, role="test")
    await publisher.start()
    try:
        topic = f"{TOPICS.prefix}/alice/config"
        await publisher.publish(topic, b'{"version": 1}', retain=True)
        # Retained: a device subscribing afterwards still gets it.
        device: Probe = await probes(broker.endpoint, "alice", alice.password)
        await device.subscribe(topic)
        assert await eventually(lambda: device.got(topic, b'{"version": 1}'))
    finally:
        await publisher.stop()
    with pytest.raises(PublishError):
        await publisher.publish(f"{TOPICS.prefix}/alice/commands", b"{}")
