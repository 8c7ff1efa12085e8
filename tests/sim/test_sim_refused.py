"""The simulator counts the connections a broker refuses, and reports them.

Against fieldline's own brokers (managed Mosquitto with dynamic security, in-process
amqtt) with real credentials: a device given a wrong password is refused at every try,
and a device disabled while it runs is dropped and refused at every reconnect. Before,
the report said "connect failures 0" for the second: gmqtt gave up its own reconnects
after the refusal without a word.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fieldline.broker.base import Broker
from fieldline.sim import FleetOptions, FleetProgress, SimulationReport, run_fleet
from tests.broker.conftest import Credential, credential, start_broker

NOT_AUTHORIZED = {"not authorised", "not authorized"}  # MQTT 3.1.1's words, and 5's


@pytest.fixture(params=["mosquitto", "amqtt"])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    if request.param == "mosquitto":
        request.getfixturevalue("mosquitto_installed")
    started = await start_broker(request.param, tmp_path, [])
    yield started
    await started.stop()


async def fleet_of_two(broker: Broker, tmp_path: Path) -> tuple[Credential, Credential, Path]:
    good, other = credential("sim-0001"), credential("sim-0002")
    for device in (good, other):
        await broker.apply(device.device, password=device.password)
    passwords = tmp_path / "credentials.json"
    passwords.write_text(json.dumps({good.device_id: good.password, other.device_id: "wrong"}))
    return good, other, passwords


def options(broker: Broker, credentials: Path, devices: int) -> FleetOptions:
    return FleetOptions(
        devices=devices,
        rate=2.0,
        mqtt_host=broker.endpoint.host,
        mqtt_port=broker.endpoint.port,
        credentials_file=credentials,
        progress_interval=0.2,
        seed=3,
    )


async def run_until(options: FleetOptions, done: object) -> SimulationReport:
    """Run the fleet until `done(progress)` holds (generous deadline), then stop it."""
    stop = asyncio.Event()

    def watch(progress: FleetProgress) -> None:
        if done(progress):  # type: ignore[operator]
            stop.set()

    async with asyncio.timeout(60):
        return await run_fleet(options, stop=stop, on_progress=watch)


async def test_a_device_with_a_wrong_password_is_counted_as_refused(
    broker: Broker, tmp_path: Path
) -> None:
    _, other, passwords = await fleet_of_two(broker, tmp_path)

    report = await run_until(options(broker, passwords, 2), lambda p: p.refused >= 2)

    assert report.devices_connected == 1
    refused = report.device(other.device_id).refused
    assert set(refused) <= NOT_AUTHORIZED and sum(refused.values()) >= 2
    assert report.connect_failures == 0
    assert f"connections refused {sum(report.refused.values())} (not author" in report.summary()


async def test_a_device_disabled_while_running_is_counted_at_each_refused_reconnect(
    broker: Broker, tmp_path: Path
) -> None:
    good, _, passwords = await fleet_of_two(broker, tmp_path)
    passwords.write_text(json.dumps({good.device_id: good.password}))
    disabling: list[asyncio.Task[None]] = []

    def disable_once_connected(progress: FleetProgress) -> bool:
        if progress.devices_connected == 1 and not disabling:
            disabled = dataclasses.replace(good.device, enabled=False)
            disabling.append(asyncio.create_task(broker.apply(disabled)))
        return progress.refused >= 1

    report = await run_until(options(broker, passwords, 1), disable_once_connected)
    await disabling[0]

    device = report.device(good.device_id)
    assert device.connected and device.connections_lost == 1
    assert set(device.refused) <= NOT_AUTHORIZED and sum(device.refused.values()) >= 1
    assert "connections lost 1" in report.summary()
