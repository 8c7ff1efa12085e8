"""The batcher and its writer against real PostgreSQL: one message the database refuses
never holds up the others, failures worth retrying are retried, and every message is
counted once, when its outcome is committed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from fieldline.domain.readings import Reading
from fieldline.domain.topics import TopicScheme
from fieldline.ingest.batcher import Batcher
from fieldline.ingest.consumer import Message
from fieldline.ingest.decode import DecodeLimits
from fieldline.ingest.ratelimit import DeviceRateLimiter
from fieldline.ingest.service import IngestConsumer
from fieldline.ingest.writer import BatchWriter
from fieldline.ops.metrics import Metrics
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.migrate import migrate
from fieldline.storage.writer import DeviceReadings, Presence
from tests.conftest import create_devices
from tests.e2e.conftest import eventually

LIMITS = DecodeLimits(max_payload_bytes=65_536, max_future_skew=timedelta(minutes=5))


def uplink(
    topic: str, payload: bytes, telemetry: DeviceReadings | None, presence: Presence | None = None
) -> Message:
    """A message as the consumer would have made it."""
    return (topic, payload, telemetry, presence, None, None, None)


@pytest.fixture
async def pool(pg15_database_url: str) -> AsyncIterator[Pool]:
    await migrate(pg15_database_url)
    pool = await open_pool(pg15_database_url, min_size=1, max_size=2)
    async with pool.connection() as conn:
        await create_devices(conn, "dev-1", "dev-2", "dev-3")
    yield pool
    await pool.close()


async def scalar(pool: Pool, sql: str) -> object:
    async with pool.connection() as conn:
        row = await (await conn.execute(sql)).fetchone()
    assert row is not None
    return next(iter(row.values()))


async def rows(pool: Pool, sql: str) -> list[tuple[object, ...]]:
    async with pool.connection() as conn:
        return [tuple(r.values()) for r in await (await conn.execute(sql)).fetchall()]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


class Running:
    """A batcher writing through ingest's writer, as `fieldline ingest` runs them."""

    def __init__(self, url: str, *, max_messages: int = 1_000, max_delay: float = 0.2) -> None:
        self.metrics = Metrics()
        self.writer = BatchWriter(url)
        self.batcher = Batcher(
            write=self.writer, metrics=self.metrics, max_messages=max_messages, max_delay=max_delay
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.batcher.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.batcher.drain()
        assert self.task is not None
        await self.task
        await self.writer.close()


def telemetry(device_id: str, n: int, **attributes: str) -> DeviceReadings:
    now = datetime.now(UTC)
    return DeviceReadings(device_id, now, [Reading(f"m{n}", now, {"t": float(n)}, attributes)])


async def test_a_message_the_database_refuses_is_rejected_and_the_rest_stored(
    pg15_database_url: str, pool: Pool
) -> None:
    """Second line of defence: these slipped past decoding (built here directly). Before,
    the batch was retried for ever and held every device's messages behind it."""
    poison = {
        17: {"mode": "a\x00b"},  # NUL in an attribute
        33: {"\ud800": "x"},  # an unpaired surrogate in a name
    }
    async with Running(pg15_database_url) as running:
        committed = []
        for n in range(50):
            topic = f"devices/dev-{n % 2 + 1}/telemetry"
            item = telemetry(f"dev-{n % 2 + 1}", n, **poison.get(n, {}))
            committed.append(
                running.batcher.add(
                    uplink(topic, b"raw %d" % n, item, Presence(item.device_id, item.received_at))
                )
            )
        # A status whose attribute the database refuses (the status topic's own path).
        status = Presence("dev-3", datetime.now(UTC), attributes={"note": "\x00"})
        committed.append(
            running.batcher.add(
                ("devices/dev-3/status", b"raw status", None, status, None, None, None)
            )
        )
        assert len(set(committed)) == 1, "not one batch: the test would not test splitting"
        # The batch's outcome is committed (its PUBACKs may go): stored or rejected, each.
        await asyncio.wait_for(committed[0], timeout=60)

    assert await scalar(pool, "SELECT count(*) FROM telemetry") == 48
    stored = {int(r[0]) for r in await rows(pool, "SELECT value FROM telemetry")}
    assert stored == set(range(50)) - set(poison)
    rejected = await rows(
        pool, "SELECT topic, reason, payload, detail FROM rejected_messages ORDER BY payload"
    )
    assert [(r[0], r[1], bytes(r[2])) for r in rejected] == [
        ("devices/dev-2/telemetry", "unstorable", b"raw 17"),
        ("devices/dev-2/telemetry", "unstorable", b"raw 33"),
        ("devices/dev-3/status", "unstorable", b"raw status"),
    ]
    assert all(r[3] for r in rejected), "the database's words are kept as the detail"
    assert "surrogates not allowed" in str(rejected[1][3])
    metrics = running.metrics
    assert sample(metrics, "fieldline_messages_rejected_total", reason="unstorable") == 3
    assert sample(metrics, "fieldline_messages_stored_total") == 48
    assert sample(metrics, "fieldline_ingest_write_errors_total") >= 3
    assert running.batcher.pending == 0


async def test_a_failure_retrying_cures_is_retried_not_split(
    pg15_database_url: str, pool: Pool
) -> None:
    """A table gone (an operator's mistake, a restore under way) is no message's fault:
    the batch waits, the stall shows, and once the table is back all is stored."""
    async with pool.connection() as conn:
        await conn.execute("ALTER TABLE message_ledger RENAME TO message_ledger_away")
    async with Running(pg15_database_url) as running:
        committed = [
            running.batcher.add(uplink("devices/dev-1/telemetry", b"m", telemetry("dev-1", n)))
            for n in range(10)
        ]

        async def failing() -> None:
            assert sample(running.metrics, "fieldline_ingest_write_errors_total") >= 2

        await eventually(failing, timeout=60)
        assert not committed[0].done()
        assert running.batcher.write_stalled_seconds() > 0
        assert sample(running.metrics, "fieldline_ingest_write_stalled_seconds") > 0
        assert sample(running.metrics, "fieldline_messages_stored_total") == 0
        async with pool.connection() as conn:
            await conn.execute("ALTER TABLE message_ledger_away RENAME TO message_ledger")
        await asyncio.wait_for(committed[0], timeout=60)
        assert running.batcher.write_stalled_seconds() == 0
    assert await scalar(pool, "SELECT count(*) FROM telemetry") == 10
    assert await scalar(pool, "SELECT count(*) FROM rejected_messages") == 0


async def test_a_rejection_is_counted_once_kept_not_when_parsed(
    pg15_database_url: str, pool: Pool
) -> None:
    """While the rejected store cannot be written, the rejection is not counted yet."""
    async with Running(pg15_database_url) as running:
        consumer = IngestConsumer(
            batcher=running.batcher, topics=TopicScheme(), limits=LIMITS, metrics=running.metrics
        )
        async with pool.connection() as conn:
            await conn.execute("ALTER TABLE rejected_messages RENAME TO rejected_away")
        committed = consumer.submit("devices/dev-1/telemetry", b"not json")

        async def failing() -> None:
            assert sample(running.metrics, "fieldline_ingest_write_errors_total") >= 1

        await eventually(failing, timeout=60)
        rejected = sample(
            running.metrics, "fieldline_messages_rejected_total", reason="invalid_json"
        )
        assert rejected == 0, "counted as rejected while nothing was kept"
        async with pool.connection() as conn:
            await conn.execute("ALTER TABLE rejected_away RENAME TO rejected_messages")
        await asyncio.wait_for(committed, timeout=60)
        rejected = sample(
            running.metrics, "fieldline_messages_rejected_total", reason="invalid_json"
        )
        assert rejected == 1
    assert await scalar(pool, "SELECT count(*) FROM rejected_messages") == 1


async def test_received_adds_up_to_stored_duplicate_and_rejected(
    pg15_database_url: str, pool: Pool
) -> None:
    """Per message: every message received is stored, a duplicate or rejected, once."""
    now = int(time.time())
    good = [orjson.dumps({"message_id": f"g{n}", "t": n}) for n in range(20)]
    batch = orjson.dumps(
        {"message_id": "b", "readings": [{"timestamp": now - n, "t": n} for n in range(5)]}
    )
    half_new = orjson.dumps(
        {"readings": [{"message_id": "g0", "t": 0}, {"message_id": "new", "t": 1}]}
    )
    messages: list[tuple[str, bytes]] = [
        *(("devices/dev-1/telemetry", p) for p in good),
        ("devices/dev-1/telemetry", batch),
        ("devices/dev-1/telemetry", batch),  # duplicate message (5 duplicate readings)
        ("devices/dev-1/telemetry", good[3]),  # duplicate
        ("devices/dev-1/telemetry", half_new),  # stored: one reading is new
        ("devices/dev-1/telemetry", b"{"),  # invalid_json
        ("devices/dev-1/telemetry", b'{"\\u202et": 1}'),  # invalid_name
        ("devices/dev-1/telemetry", b'{"t": 1, "message_id": "\\u0000"}'),  # invalid_text
        ("devices/dev-1/status", b'{"status": "online"}'),
        ("devices/dev-1/heartbeat", b""),
        ("devices/dev-1/commands/result", b'{"command_id": "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f",'
         b' "status": "failed"}'),  # unknown_command, refused by the writer
        ("elsewhere/dev-1/telemetry", b"{}"),  # unknown_topic
        *(("devices/dev-2/telemetry", b'{"message_id": "x%d", "v": 1}' % n) for n in range(25)),
        ("devices/dev-2/telemetry", orjson.dumps({"message_id": "x0", "t": 0})),  # limited dup
        ("devices/dev-2/telemetry", orjson.dumps({"message_id": "x99", "t": 9})),  # rate_limited
    ]  # fmt: skip
    async with Running(pg15_database_url, max_messages=7, max_delay=0.01) as running:
        consumer = IngestConsumer(
            batcher=running.batcher,
            topics=TopicScheme(),
            limits=LIMITS,
            metrics=running.metrics,
            rate_limiter=DeviceRateLimiter(0.001, 25),  # a burst of 25, then (nearly) none
        )
        for topic, payload in messages:
            await consumer.handle(topic, payload)

    def total(name: str) -> float:
        family = next(f for f in running.metrics.registry.collect() if f.name == name)
        return sum(s.value for s in family.samples if s.name.endswith("_total"))

    received = total("fieldline_messages_received")
    stored = total("fieldline_messages_stored")
    duplicate = total("fieldline_messages_duplicate")
    rejected = total("fieldline_messages_rejected")
    assert received == len(messages) == 58
    assert (stored, duplicate, rejected) == (49, 3, 6)
    assert received == stored + duplicate + rejected
    assert sample(running.metrics, "fieldline_readings_duplicate_total") == 5 + 1 + 1 + 1
    assert await scalar(pool, "SELECT count(*) FROM rejected_messages") == rejected
