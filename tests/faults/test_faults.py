"""Fault injection (SPEC §9): whatever fails, every acknowledged reading is stored once.

Each test runs the production topology as real processes (fieldline.bench.deployment;
the device load is in tests/deployment.py),
publishes with unique message ids from real device connections, injects one
fault mid-stream, and then counts: every message the broker acknowledged to a
device must be in the database, none twice. The counts are printed in the
test session's summary.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fieldline.storage.pgserver import LocalPostgres
from tests.conftest import FaultReport
from tests.deployment import (
    Deployment,
    DeviceLoad,
    LoadReport,
    MosquittoServer,
    RssSampler,
    Stored,
    report_line,
    running,
    wait_stored,
)

pytestmark = [pytest.mark.usefixtures("mosquitto_installed"), pytest.mark.timeout(240)]

DEVICES = 10
RATE_PER_DEVICE = 40.0  # 400 messages/s in all


def assert_every_acknowledged_reading_stored_once(report: LoadReport, result: Stored) -> None:
    assert report.unacknowledged == 0, "the devices' own resends never got through"
    assert report.acknowledged <= result.message_ids, "acknowledged readings were lost"
    assert result.duplicated_points == 0, "readings were stored twice"
    assert result.points == result.readings * DeviceLoad.METRICS_PER_MESSAGE


@contextlib.asynccontextmanager
async def _deploy(
    workdir: Path, database_url: str, **env: str
) -> AsyncIterator[tuple[Deployment, DeviceLoad]]:
    broker = MosquittoServer(workdir / "mosquitto")
    await broker.start()
    deployment = Deployment(workdir, database_url, broker, extra_env=env)
    with running(deployment):
        await deployment.start_api()
        credentials = await deployment.register([f"fault-{i:02d}" for i in range(DEVICES)])
        load = DeviceLoad(credentials, broker.port, rate_per_device=RATE_PER_DEVICE)
        await load.connect()
        yield deployment, load


async def test_ingest_killed_mid_stream_then_restarted(
    workdir: Path, pg15_database_url: str, fault_report: FaultReport
) -> None:
    async with _deploy(workdir, pg15_database_url) as (deployment, load):
        ingest = await deployment.start_ingest("1")
        load.start()
        await asyncio.sleep(4)
        ingest.kill()
        await asyncio.sleep(3)  # the broker queues for the dead session meanwhile
        await deployment.start_ingest("1")
        await asyncio.sleep(4)
        report = await load.stop()
        result = await wait_stored(pg15_database_url, report.acknowledged)
        redelivered = await deployment.metric("ingest-1", "fieldline_readings_duplicate_total")

        fault_report.append(
            report_line(
                "ingest kill -9 + restart",
                report,
                result,
                **{"redeliveries dropped by the ledger": int(redelivered)},
            )
        )
        assert_every_acknowledged_reading_stored_once(report, result)


async def test_database_down_for_30_seconds(workdir: Path, fault_report: FaultReport) -> None:
    # A PostgreSQL this test owns, never the suite's shared one.
    server = LocalPostgres(workdir / "postgres")
    url = await asyncio.to_thread(server.start)
    try:
        async with _deploy(workdir, url, FIELDLINE_INGEST_MAX_PENDING="1000") as (deployment, load):
            ingest = await deployment.start_ingest("1")
            load.start()
            await asyncio.sleep(3)
            with RssSampler(ingest) as rss:
                before = ingest.rss_mib()
                await asyncio.to_thread(server.stop)
                depths = []
                for _ in range(30):
                    await asyncio.sleep(1)
                    depths.append(
                        await deployment.metric("ingest-1", "fieldline_ingest_queue_depth")
                    )
                await asyncio.to_thread(server.start)
                await asyncio.sleep(5)
                report = await load.stop(settle=90)
                result = await wait_stored(url, report.acknowledged, timeout=120)
            errors = await deployment.metric("ingest-1", "fieldline_ingest_write_errors_total")

            fault_report.append(
                report_line(
                    "database stopped 30 s",
                    report,
                    result,
                    **{
                        "ingest queue peak": int(max(depths)),
                        "failed writes retried": int(errors),
                        "ingest RSS MiB before/peak": f"{before:.0f}/{rss.peak_mib:.0f}",
                    },
                )
            )
            assert_every_acknowledged_reading_stored_once(report, result)
            assert errors >= 1, "the outage was not noticed: the fault was not injected"
            # Back-pressure: ingest holds at most FIELDLINE_INGEST_MAX_PENDING messages while
            # ~12,000 arrive during the outage; the broker keeps the rest.
            assert max(depths) <= 1000
            assert report.published - max(depths) > 10_000
            assert rss.peak_mib - before < 100
    finally:
        await asyncio.to_thread(server.stop)


async def test_broker_restarted_with_persistence(
    workdir: Path, pg15_database_url: str, fault_report: FaultReport
) -> None:
    # One ingest without a share group: Mosquitto 2.0 forgets shared subscriptions at a
    # restart (docs/deploy.md, "One ingest or several"), so deploy's group is left out here.
    async with _deploy(workdir, pg15_database_url, FIELDLINE_INGEST_SHARE_GROUP="") as (
        deployment,
        load,
    ):
        await deployment.start_ingest("1")
        load.start()
        await asyncio.sleep(4)
        broker = deployment.broker
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(3)
        await broker.start()
        await asyncio.sleep(6)
        report = await load.stop(settle=60)
        result = await wait_stored(pg15_database_url, report.acknowledged)

        fault_report.append(report_line("broker restart", report, result))
        assert_every_acknowledged_reading_stored_once(report, result)


async def test_two_ingest_processes_one_killed(
    workdir: Path, pg15_database_url: str, fault_report: FaultReport
) -> None:
    async with _deploy(workdir, pg15_database_url, FIELDLINE_INGEST_SHARE_GROUP="fieldline") as (
        deployment,
        load,
    ):
        await deployment.start_ingest("1")
        second = await deployment.start_ingest("2")
        load.start()
        await asyncio.sleep(3)
        # The shared subscription splits the load: both processes are storing.
        shares = [
            await deployment.metric(name, "fieldline_messages_received_total")
            for name in ("ingest-1", "ingest-2")
        ]
        assert min(shares) > 0.3 * sum(shares), shares
        second.kill()
        await asyncio.sleep(4)
        # Meanwhile the first keeps storing its share; the broker queues the other's.
        await deployment.start_ingest("2")
        await asyncio.sleep(3)
        report = await load.stop()
        result = await wait_stored(pg15_database_url, report.acknowledged)

        fault_report.append(
            report_line(
                "two ingest, one kill -9",
                report,
                result,
                **{"shares before the kill": "/".join(str(int(s)) for s in shares)},
            )
        )
        assert_every_acknowledged_reading_stored_once(report, result)


async def test_an_ingest_instance_retired_for_good(
    workdir: Path, pg15_database_url: str, fault_report: FaultReport
) -> None:
    """Scaling down: the broker routes a stopped instance's share into its session queue;
    `fieldline ingest --retire` stores that queue and ends the session, so nothing is
    stranded and the remaining instance takes every message from then on."""
    async with _deploy(workdir, pg15_database_url, FIELDLINE_INGEST_SHARE_GROUP="fieldline") as (
        deployment,
        load,
    ):
        await deployment.start_ingest("1")
        second = await deployment.start_ingest("2")
        load.start()
        await asyncio.sleep(2)
        assert second.stop() == 0
        await asyncio.sleep(3)  # half of these seconds' messages queue for instance 2
        retiring = deployment._component(
            "retire-2",
            ["ingest", "--retire"],
            "fieldline ingest 2 retired",
            FIELDLINE_INGEST_INSTANCE="2",
        )
        retiring.start()
        await retiring.wait_ready()
        assert retiring.process is not None
        assert await asyncio.to_thread(retiring.process.wait, 30) == 0
        await asyncio.sleep(3)  # only instance 1 is subscribed now
        report = await load.stop()
        result = await wait_stored(pg15_database_url, report.acknowledged, timeout=60)

        fault_report.append(report_line("ingest instance retired", report, result))
        assert_every_acknowledged_reading_stored_once(report, result)
