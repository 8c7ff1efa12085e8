"""Ingest's broker session: no device can take it, and ingest notices when it is lost.

A real ingest (IngestRunner: the broker session, the batcher and its writer) on real
PostgreSQL, against each broker fieldline runs. A device naming ingest's client id is
refused and ingest goes on storing; another connection under ingest's client id with
the service account's credentials (two ingest processes given one instance name) takes
the session over, and ingest logs it, counts it, shows not ready while it is away and
comes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fieldline.broker.base import Broker
from fieldline.config import Settings
from fieldline.ops.metrics import Metrics
from fieldline.runtime.ingest_runner import INGEST_CLIENT_PREFIX, IngestRunner
from fieldline.storage import devices as device_store
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.migrate import migrate
from tests.broker.conftest import Credential, Probe, credential, refused, start_broker

INGEST_ID = INGEST_CLIENT_PREFIX + "1"
SERVICE_LOG = "fieldline.ingest.service"


@dataclass
class Ingesting:
    broker: Broker
    runner: IngestRunner
    metrics: Metrics
    pool: Pool
    alice: Credential
    bob: Credential

    async def stored(self, device_id: str) -> list[float]:
        async with self.pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT value FROM telemetry WHERE device_id = %s ORDER BY time", (device_id,)
                )
            ).fetchall()
        return [row["value"] for row in rows]

    def losses(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(self.metrics.render().decode()):
            for sample in family.samples:
                if sample.name == "fieldline_ingest_session_losses_total":
                    found[sample.labels["cause"]] = sample.value
        return found

    async def thief(self, *, clean_session: bool) -> Probe:
        """A second connection under ingest's client id, with the service account."""
        probe = Probe(INGEST_ID)
        service = self.broker.service
        await probe.connect(
            self.broker.endpoint, service.username, service.password, clean_session=clean_session
        )
        return probe


async def waiting(check: object, *, within: float = 30.0) -> None:
    """Until `check()` holds (generous: the machine may be busy), else fail."""
    async with asyncio.timeout(within):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.02)


@pytest.fixture(params=["mosquitto", "amqtt"])
async def ingesting(
    request: pytest.FixtureRequest, pg15_database_url: str, tmp_path: Path
) -> AsyncIterator[Ingesting]:
    if request.param == "mosquitto":
        request.getfixturevalue("mosquitto_installed")
    await migrate(pg15_database_url)
    pool = await open_pool(pg15_database_url, min_size=1, max_size=2)
    alice, bob = credential("alice"), credential("bob")
    async with pool.connection() as conn:
        for device in (alice.device, bob.device):
            await device_store.create_device(
                conn,
                device_id=device.device_id,
                name="",
                device_type="",
                group=None,
                metadata={},
                secret_hash=device.secret_hash,
            )
    broker = await start_broker(request.param, tmp_path, [alice.device, bob.device])
    metrics = Metrics()
    runner = IngestRunner(
        settings=Settings(data_dir=tmp_path, database_url=pg15_database_url),
        url=pg15_database_url,
        endpoint=broker.endpoint,
        service=broker.service,
        metrics=metrics,
    )
    stopping = asyncio.Event()
    running = asyncio.create_task(runner.run(stopping))
    try:
        await asyncio.wait_for(runner.connected.wait(), 30)
        yield Ingesting(broker, runner, metrics, pool, alice, bob)
    finally:
        stopping.set()
        await running
        await broker.stop()
        await pool.close()


async def publish_reading(ingesting: Ingesting, value: float) -> None:
    device = Probe()
    alice = ingesting.alice
    await device.connect(ingesting.broker.endpoint, alice.device_id, alice.password)
    device.publish(f"devices/{alice.device_id}/telemetry", f'{{"temperature": {value}}}'.encode())
    await device.close()


async def test_a_device_under_ingests_client_id_is_refused_and_ingest_keeps_storing(
    ingesting: Ingesting,
) -> None:
    bob, endpoint = ingesting.bob, ingesting.broker.endpoint
    for clean_session in (True, False):
        assert await refused(
            endpoint, bob.device_id, bob.password, client_id=INGEST_ID, clean_session=clean_session
        )

    await publish_reading(ingesting, 21.5)

    async with asyncio.timeout(30):
        while await ingesting.stored("alice") != [21.5]:
            await asyncio.sleep(0.05)
    assert ingesting.runner.connected.is_set()
    assert ingesting.losses() == {}


async def test_a_session_taken_over_and_lost_is_logged_counted_and_not_ready(
    ingesting: Ingesting, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SERVICE_LOG)
    runner = ingesting.runner

    # A clean session under ingest's id ends ingest's session: ingest is dropped, and
    # at its reconnect the broker has no session for it.
    thief = await ingesting.thief(clean_session=True)
    await waiting(lambda: not runner.connected.is_set())  # what `fieldline ingest`'s /ready shows
    await thief.close()
    await waiting(lambda: ingesting.losses().get("not_present") == 1)
    await waiting(runner.connected.is_set)

    lost = [r for r in caplog.records if "no session for ingest" in r.getMessage()]
    assert [r.__dict__["client_id"] for r in lost] == [INGEST_ID]

    await publish_reading(ingesting, 7.0)
    async with asyncio.timeout(30):
        while 7.0 not in await ingesting.stored("alice"):
            await asyncio.sleep(0.05)


async def test_a_fight_over_ingests_client_id_is_reported_as_a_take_over(
    ingesting: Ingesting, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SERVICE_LOG)
    runner = ingesting.runner
    # Neither amqtt nor Mosquitto 2.0.11 says why it drops a connection for another under
    # its client id (no DISCONNECT 0x8E, measured): ingest reads connections dropped right
    # after they began, again and again, as a take-over.
    for _ in range(3):
        await waiting(runner.connected.is_set)
        thief = await ingesting.thief(clean_session=False)
        await waiting(lambda: not runner.connected.is_set())
        await thief.close()
    await waiting(runner.connected.is_set)

    assert ingesting.losses().get("taken_over", 0) >= 1
    taken = [r for r in caplog.records if "taking over its session" in r.getMessage()]
    assert taken and all(r.__dict__["client_id"] == INGEST_ID for r in taken)
