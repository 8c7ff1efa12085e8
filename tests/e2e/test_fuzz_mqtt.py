"""A bounded MQTT fuzz run through a live `fieldline up`, and `up`'s /ready on a write stall.

The fuzz is `fieldline bench fuzz` (src/fieldline/bench/fuzz.py) sized to a few seconds:
a few thousand good, duplicate and hostile messages from several devices, after which
received, stored, duplicate and rejected (per reason) must come out exactly as expected
in /metrics and in the database, and every good reading must be stored. The bench runs
the same fuzz at 60,000 messages (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from fieldline.bench.deployment import metric_total
from fieldline.bench.fuzz import fuzz_passed, observe, publish_fuzz
from fieldline.bench.local_up import register_devices
from tests.conftest import PgServer
from tests.e2e.conftest import (
    ADMIN_PASSWORD,
    DeviceClient,
    Platform,
    eventually,
    start_platform,
    stop_platform,
)

pytestmark = [pytest.mark.usefixtures("mosquitto_installed"), pytest.mark.timeout(300)]


@contextlib.contextmanager
def running_up(
    pg15: PgServer, workdir: Path, broker: str, **env: str
) -> Iterator[tuple[Platform, str]]:
    """`fieldline up` with the given broker on a database of the suite's PostgreSQL 15, so
    that the test can count (and break things) in it."""
    database = pg15.create_database()
    url = pg15.url_for(database)
    try:
        platform = start_platform(
            f"{broker}+postgresql15",
            {"FIELDLINE_BROKER": broker, "DATABASE_URL": url, **env},
            workdir / "data",
        )
        try:
            yield platform, url
        finally:
            code = stop_platform(platform)
        assert code == 0, f"fieldline up exited {code} on SIGTERM"
    finally:
        pg15.drop_database(database)


async def test_a_fuzz_of_thousands_of_mixed_messages_adds_up_exactly(
    pg15: PgServer, workdir: Path
) -> None:
    # Exact counts: no device may be refused for its pace.
    with running_up(pg15, workdir, "mosquitto", FIELDLINE_DEVICE_RATE_LIMIT="0") as (up, url):
        devices = await register_devices(up.api_url, ADMIN_PASSWORD, "fuzz", 6)
        sent = await publish_fuzz(
            devices, mqtt_port=up.mqtt_port, messages=3_000, rate=1_500.0, seed=7
        )
        seen = await observe(up.api_url, url, sent.expected)
        async with up.http() as http:
            ready = (await http.get("/ready")).json()

    expected = sent.expected
    assert sent.acknowledged == sent.published == 3_000
    assert seen.received == expected.messages == 3_000
    assert seen.received == seen.stored + seen.duplicate + sum(seen.rejected.values())
    assert (seen.stored, seen.duplicate) == (expected.stored, expected.duplicate)
    assert seen.rejected == expected.rejected, "per reason, in /metrics"
    assert seen.rejected_in_database == expected.rejected, "per reason, in the rejected store"
    assert seen.stored_ids == len(expected.ids), "good readings missing from the ledger"
    assert (seen.readings, seen.duplicate_readings) == (
        expected.readings,
        expected.duplicate_readings,
    )
    assert seen.points == seen.points_in_database == expected.points
    assert seen.queue_depth == seen.write_errors == 0
    assert ready["checks"]["ingest_writes"] is True
    assert seen.ready == 200
    assert fuzz_passed(sent, seen)
    # The mix did hold what it is meant to: every kind of outcome, many reasons.
    assert min(expected.stored, expected.duplicate) > 100
    assert len(expected.rejected) >= 10


@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
async def test_a_write_stall_makes_up_not_ready_until_it_clears(
    pg15: PgServer, workdir: Path, broker: str
) -> None:
    """`up` runs ingest in process beside Mosquitto, and as a child process whose metrics
    it reads beside amqtt: either way a stalled write shows in its /ready."""
    with running_up(pg15, workdir, broker) as (up, url):
        password = await up.register("stall-1")
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("ALTER TABLE message_ledger RENAME TO message_ledger_away")
        device = await DeviceClient("stall-1", password, up.mqtt_port).connect()
        try:
            device.publish("telemetry", b'{"message_id": "waits", "t": 1}')

            async def not_ready() -> None:
                async with up.http() as http:
                    answer = await http.get("/ready")
                assert answer.status_code == 503, answer.text
                assert answer.json()["checks"]["ingest_writes"] is False
                assert answer.json()["checks"]["database"] is True

            await eventually(not_ready, timeout=120, interval=1)
            async with httpx.AsyncClient(base_url=up.api_url, timeout=10) as http:
                text = (await http.get("/metrics")).text
            assert metric_total(text, "fieldline_ingest_write_stalled_seconds") > 15
            assert metric_total(text, "fieldline_ingest_write_errors_total") >= 2
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute("ALTER TABLE message_ledger_away RENAME TO message_ledger")

            async def ready_and_stored() -> None:
                async with up.http() as http:
                    answer = await http.get("/ready")
                assert answer.status_code == 200, answer.text
                async with await psycopg.AsyncConnection.connect(url) as conn:
                    rows = await (
                        await conn.execute("SELECT message_id FROM message_ledger")
                    ).fetchall()
                assert rows == [("waits",)]

            await eventually(ready_and_stored, timeout=90, interval=0.5)
        finally:
            await device.close()
