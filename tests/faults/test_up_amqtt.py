"""Fault injection on `fieldline up`'s embedded defaults: the in-process amqtt broker,
with ingest as `up`'s child process.

The child is killed (`kill -9`) mid-stream; `up` starts it again, amqtt keeps its
session's messages meanwhile and sends again what was not acknowledged, and every
message amqtt acknowledged to a device is stored once. Counted as in test_faults.py.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import FaultReport
from tests.deployment import DeviceLoad, report_line, wait_stored
from tests.e2e.conftest import Platform, eventually, start_platform, stop_platform
from tests.faults.test_faults import assert_every_acknowledged_reading_stored_once

pytestmark = pytest.mark.timeout(240)

DEVICES = 10
RATE_PER_DEVICE = 40.0  # 400 messages/s in all


def amqtt_env(database_url: str) -> dict[str, str]:
    return {
        "FIELDLINE_BROKER": "amqtt",
        "DATABASE_URL": database_url,
        # Batches wait long enough that a kill or a stop always finds messages the
        # child had received and not yet acknowledged.
        "FIELDLINE_BATCH_MAX_DELAY_MS": "250",
    }


@pytest.fixture
def platform(workdir: Path, pg15_database_url: str) -> Iterator[Platform]:
    running = start_platform("amqtt-ingest-child", amqtt_env(pg15_database_url), workdir / "data")
    try:
        yield running
    finally:
        code = stop_platform(running)
        shutil.rmtree(workdir / "data", ignore_errors=True)
        assert code == 0, f"fieldline up exited {code} on SIGTERM"


def _command_line(process: psutil.Process) -> list[str]:
    """A child's command line; none for one that died and `up` has not reaped yet."""
    try:
        return process.cmdline()
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return []


def ingest_child(platform: Platform, *, other_than: int | None = None) -> psutil.Process:
    children = [
        child
        for child in psutil.Process(platform.process.pid).children()
        if "ingest" in _command_line(child)
    ]
    assert len(children) == 1, children
    assert children[0].pid != other_than, "not restarted yet"
    return children[0]


async def test_ingest_child_killed_mid_stream_is_restarted(
    platform: Platform, pg15_database_url: str, fault_report: FaultReport
) -> None:
    first = await eventually(lambda: asyncio.to_thread(ingest_child, platform))
    credentials = {
        device_id: {"password": await platform.register(device_id)}
        for device_id in (f"child-{i:02d}" for i in range(DEVICES))
    }
    load = DeviceLoad(credentials, platform.mqtt_port, rate_per_device=RATE_PER_DEVICE, mqtt5=False)
    await load.connect()
    load.start()
    await asyncio.sleep(3)
    first.kill()
    published_at_kill = load.published
    second = await eventually(
        lambda: asyncio.to_thread(ingest_child, platform, other_than=first.pid)
    )
    await asyncio.sleep(4)
    report = await load.stop()
    result = await wait_stored(pg15_database_url, report.acknowledged)

    fault_report.append(
        report_line(
            "up (amqtt): ingest child kill -9, restarted by up",
            report,
            result,
            **{"published before the kill": published_at_kill},
        )
    )
    assert ingest_child(platform).pid == second.pid, "the restarted child died again"
    assert report.published - published_at_kill > 1_000, "the load stopped at the kill"
    assert_every_acknowledged_reading_stored_once(report, result)


async def test_stopping_up_stores_what_amqtt_accepted(
    workdir: Path, pg15_database_url: str, fault_report: FaultReport
) -> None:
    """SIGTERM to `up` while devices publish: amqtt holds its queue in memory only, so
    `up` disconnects the devices and lets ingest store the rest before it stops."""
    platform = start_platform("amqtt-stop", amqtt_env(pg15_database_url), workdir / "data")
    try:
        credentials = {
            device_id: {"password": await platform.register(device_id)}
            for device_id in (f"stop-{i:02d}" for i in range(DEVICES))
        }
        load = DeviceLoad(
            credentials, platform.mqtt_port, rate_per_device=RATE_PER_DEVICE, mqtt5=False
        )
        await load.connect()
        load.start()
        await asyncio.sleep(3)
    finally:
        code = await asyncio.to_thread(stop_platform, platform)  # devices still publishing
    published_at_stop = load.published
    report = await load.stop(settle=2)
    result = await wait_stored(pg15_database_url, report.acknowledged, timeout=10)

    fault_report.append(
        report_line(
            "up (amqtt): SIGTERM while devices publish",
            report,
            result,
            **{"published when up had stopped": published_at_stop},
        )
    )
    log = platform.log.read_text()[-6000:]  # where it went wrong, if it did
    assert code == 0, f"fieldline up exited {code} on SIGTERM:\n{log}"
    assert len(report.acknowledged) > 1_000
    # A message in flight when `up` closed the device's connection was never
    # acknowledged: the device keeps it for the next broker, so it is not counted lost.
    # Every message amqtt acknowledged must be stored, exactly once.
    assert report.acknowledged <= result.message_ids, f"acknowledged readings were lost:\n{log}"
    assert result.duplicated_points == 0, "readings were stored twice"
    assert result.points == result.readings * DeviceLoad.METRICS_PER_MESSAGE


async def test_ready_says_so_while_the_ingest_child_cannot_work(platform: Platform) -> None:
    """Nothing is stored while the child is frozen (SIGSTOP): `up` is not ready then, and
    is again once it runs (SIGCONT), without a restart."""

    async def readiness(expected: int) -> dict[str, bool]:
        async with platform.http() as http:
            answer = await http.get("/ready")
        assert answer.status_code == expected, answer.text
        checks: dict[str, bool] = answer.json()["checks"]
        return checks

    child = await eventually(lambda: asyncio.to_thread(ingest_child, platform))
    ready = await eventually(lambda: readiness(200), timeout=60)
    assert ready["ingest_writes"] is True and ready["ingest_broker"] is True
    child.suspend()
    try:
        frozen = await eventually(lambda: readiness(503), timeout=30)
        assert frozen["database"] is True and frozen["broker"] is True
        assert frozen["ingest_broker"] is False
    finally:
        child.resume()
    await eventually(lambda: readiness(200), timeout=60)
    assert ingest_child(platform).pid == child.pid, "up restarted the child instead"
