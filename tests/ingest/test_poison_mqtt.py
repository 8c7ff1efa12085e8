"""Poison over MQTT: `fieldline ingest` (run in process, its ops endpoints included)
against a real Mosquitto and PostgreSQL.

One message whose text PostgreSQL cannot store used to fail its batch for ever: every
device's messages queued behind it, /ready said 200, and after a restart the broker
redelivered it and it stalled again. Now it is rejected with a reason, the others are
stored, and a write that does stall shows in /ready and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from gmqtt.mqtt.constants import MQTTv311

from fieldline.bench.deployment import metric_total
from fieldline.broker.mosquitto import ManagedMosquitto
from fieldline.config import Settings
from fieldline.domain.topics import TopicScheme
from fieldline.ingest.child import child_settings
from fieldline.runtime.components import run_ingest
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.migrate import migrate
from tests.broker.conftest import Credential, credential
from tests.conftest import create_devices
from tests.e2e.conftest import eventually
from tests.mqtt_clients import NoReconnectClient

pytestmark = [pytest.mark.usefixtures("mosquitto_installed"), pytest.mark.timeout(240)]

COMMAND = "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f"


class Ingest:
    """`fieldline ingest --ops-port` as its entry point runs it, in this event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ops = f"http://127.0.0.1:{settings.ops_port}"

    async def ready(self) -> tuple[int, dict[str, object]]:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(self.ops + "/ready")
        return answer.status_code, answer.json()

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient(timeout=10) as http:
            return metric_total((await http.get(self.ops + "/metrics")).text, name)


@pytest.fixture
async def pool(pg15_database_url: str) -> AsyncIterator[Pool]:
    await migrate(pg15_database_url)
    pool = await open_pool(pg15_database_url, min_size=1, max_size=2)
    async with pool.connection() as conn:
        await create_devices(conn, "dev-a", "dev-b")
    yield pool
    await pool.close()


@pytest.fixture
async def devices() -> dict[str, Credential]:
    return {name: credential(name) for name in ("dev-a", "dev-b")}


@pytest.fixture
async def ingest(
    workdir: Path, pg15_database_url: str, pool: Pool, devices: dict[str, Credential]
) -> AsyncIterator[Ingest]:
    broker = ManagedMosquitto(
        data_dir=workdir / "mosquitto", host="127.0.0.1", port=0, topics=TopicScheme()
    )
    await broker.start([c.device for c in devices.values()])
    settings = child_settings(
        Settings(data_dir=workdir / "data"),
        url=pg15_database_url,
        endpoint=broker.endpoint,
        service=broker.service,
    )
    stopping = asyncio.Event()
    connected = asyncio.Event()
    running = asyncio.create_task(
        run_ingest(settings, on_ready=lambda _: connected.set(), stopping=stopping)
    )
    try:
        await asyncio.wait_for(connected.wait(), timeout=60)
        yield Ingest(settings)
    finally:
        stopping.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, timeout=60)
        await broker.stop()


@contextlib.asynccontextmanager
async def device(credential: Credential, ingest: Ingest) -> AsyncIterator[NoReconnectClient]:
    client = NoReconnectClient(credential.device_id)
    client.set_auth_credentials(credential.device_id, credential.password)
    await asyncio.wait_for(
        client.connect("127.0.0.1", ingest.settings.mqtt_port, version=MQTTv311), timeout=10
    )
    try:
        yield client
    finally:
        await client.disconnect()


async def table(pool: Pool, sql: str) -> list[tuple[object, ...]]:
    async with pool.connection() as conn:
        return [tuple(r.values()) for r in await (await conn.execute(sql)).fetchall()]


POISON = [  # (topic kind, payload, reason kept)
    ("telemetry", b'{"sensors":{"\\ud800":1}}', "invalid_name"),
    ("telemetry", b'{"message_id": "p\\u0000", "t": 1}', "invalid_text"),
    ("telemetry", b'{"t": 1, "mode": "eco\\u0000"}', "invalid_text"),
    ("telemetry", b'{"t": 1, "firmware_version": "\\udbff"}', "invalid_text"),
    ("telemetry", b'{"\\u202etemp": 1}', "invalid_name"),
    ("telemetry", b'{"t": 1' + b"0" * 400 + b"}", "non_finite_value"),
    ("status", b'{"status": "online", "note": "\\u0000"}', "invalid_text"),
    ("status", b'{"status": "online", "firmware_version": "\\ud800"}', "invalid_text"),
    (
        "commands/result",
        b'{"command_id": "' + COMMAND.encode() + b'", "status": "failed", "result": "\\u0000"}',
        "invalid_payload",
    ),
    (
        "commands/result",
        b'{"command_id": "' + COMMAND.encode() + b'", "status": "failed", "result": "\\ud800"}',
        "invalid_payload",
    ),
]


async def test_poison_is_rejected_with_its_reason_and_everything_else_stored(
    ingest: Ingest, pool: Pool, devices: dict[str, Credential]
) -> None:
    async with device(devices["dev-a"], ingest) as a, device(devices["dev-b"], ingest) as b:
        for n, (kind, payload, _) in enumerate(POISON):
            for client, name in ((a, "dev-a"), (b, "dev-b")):
                good = orjson.dumps({"message_id": f"{name}-{n}", "t": float(n)})
                client.publish(f"devices/{name}/telemetry", good, qos=1)
            a.publish(f"devices/dev-a/{kind}", payload, qos=1)
        for client, name in ((a, "dev-a"), (b, "dev-b")):
            client.publish(f"devices/{name}/telemetry", b'{"message_id": "last", "t": -1}', qos=1)

        async def all_written() -> None:
            stored = await table(pool, "SELECT count(*) FROM telemetry")
            kept = await table(pool, "SELECT count(*) FROM rejected_messages")
            assert (stored, kept) == ([(2 * len(POISON) + 2,)], [(len(POISON),)])

        await eventually(all_written, timeout=60)

    rejected = await table(
        pool, "SELECT device_id, topic, reason, detail, payload FROM rejected_messages ORDER BY id"
    )
    assert [(r[1], r[2], bytes(r[4])) for r in rejected] == [  # type: ignore[arg-type]
        (f"devices/dev-a/{kind}", reason, payload) for kind, payload, reason in POISON
    ]
    assert all(r[0] == "dev-a" and r[3] for r in rejected), "device and a detail for each"
    # Nothing stalled: ingest is ready, and writes never failed.
    status, answer = await ingest.ready()
    assert status == 200, answer
    assert answer["checks"] == {"database": True, "broker": True, "ingest_writes": True}
    assert await ingest.metric("fieldline_ingest_write_errors_total") == 0
    assert await ingest.metric("fieldline_ingest_write_stalled_seconds") == 0
    received = await ingest.metric("fieldline_messages_received_total")
    stored = await ingest.metric("fieldline_messages_stored_total")
    rejected_count = await ingest.metric("fieldline_messages_rejected_total")
    assert (received, stored, rejected_count) == (
        3 * len(POISON) + 2,
        2 * len(POISON) + 2,
        len(POISON),
    )


async def test_a_write_stall_shows_in_ready_and_metrics_until_it_clears(
    ingest: Ingest, pool: Pool, devices: dict[str, Credential]
) -> None:
    """A stall no message causes (here: the ledger table renamed away by an operator) is
    retried, not split; after 15 s unwritten, ingest says it is not ready."""
    async with pool.connection() as conn:
        await conn.execute("ALTER TABLE message_ledger RENAME TO message_ledger_away")
    async with device(devices["dev-a"], ingest) as a:
        a.publish("devices/dev-a/telemetry", b'{"message_id": "waits", "t": 1}', qos=1)

        async def not_ready() -> None:
            status, answer = await ingest.ready()
            assert status == 503, answer
            assert answer["checks"] == {
                "database": True,
                "broker": True,
                "ingest_writes": False,
            }

        await eventually(not_ready, timeout=90, interval=1)
        assert await ingest.metric("fieldline_ingest_write_stalled_seconds") > 15
        assert await ingest.metric("fieldline_ingest_write_errors_total") >= 2
        async with pool.connection() as conn:
            await conn.execute("ALTER TABLE message_ledger_away RENAME TO message_ledger")

        async def ready_and_stored() -> None:
            status, answer = await ingest.ready()
            assert status == 200, answer
            assert await table(pool, "SELECT message_id FROM message_ledger") == [("waits",)]

        await eventually(ready_and_stored, timeout=60)
    assert await table(pool, "SELECT count(*) FROM rejected_messages") == [(0,)]
