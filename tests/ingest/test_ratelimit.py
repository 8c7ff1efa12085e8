"""Per-device rate limits: the bucket on a fake clock, then through ingest into PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import orjson
import pytest

from fieldline.config import Settings
from fieldline.domain.topics import TopicScheme
from fieldline.ingest.batcher import Batcher
from fieldline.ingest.decode import DecodeLimits
from fieldline.ingest.ratelimit import MIN_SWEEP_AT, DeviceRateLimiter, rate_limiter_from
from fieldline.ingest.service import IngestConsumer
from fieldline.ingest.writer import BatchWriter
from fieldline.ops.metrics import Metrics
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.migrate import migrate
from tests.conftest import create_devices

T0 = 5_000.0  # a monotonic clock is rarely near zero


def take(limiter: DeviceRateLimiter, device_id: str, now: float, attempts: int) -> int:
    """How many of `attempts` messages sent at once are allowed."""
    return sum(limiter.allow(device_id, now) for _ in range(attempts))


def test_a_full_bucket_allows_the_burst_then_refuses() -> None:
    limiter = DeviceRateLimiter(20.0, 200)
    assert take(limiter, "dev-1", T0, 250) == 200
    assert not limiter.allow("dev-1", T0)


def test_a_device_over_its_limit_still_gets_the_rate_through() -> None:
    limiter = DeviceRateLimiter(20.0, 200)
    assert take(limiter, "dev-1", T0, 200) == 200
    # Trying 100 times a second for 10 s: refused attempts take nothing, so exactly
    # the 20/s the bucket refills with get through, one every 50 ms.
    allowed = [k for k in range(1, 1001) if limiter.allow("dev-1", T0 + k * 0.01)]
    assert len(allowed) == 200
    assert allowed[:3] == [5, 10, 15]


def test_the_bucket_refills_over_time_up_to_the_burst() -> None:
    limiter = DeviceRateLimiter(20.0, 200)
    assert take(limiter, "dev-1", T0, 200) == 200
    assert take(limiter, "dev-1", T0 + 5.0, 300) == 100  # half refilled
    assert take(limiter, "dev-1", T0 + 15.0, 300) == 200  # full again
    assert take(limiter, "dev-1", T0 + 1_000.0, 300) == 200  # never more than the burst


def test_devices_have_buckets_of_their_own() -> None:
    limiter = DeviceRateLimiter(1.0, 5)
    assert take(limiter, "noisy", T0, 10) == 5
    assert take(limiter, "quiet", T0, 3) == 3
    assert take(limiter, "other", T0, 10) == 5
    assert not limiter.allow("noisy", T0 + 0.5)
    assert limiter.allow("quiet", T0 + 0.5)


def test_full_buckets_are_forgotten_so_memory_follows_active_devices() -> None:
    limiter = DeviceRateLimiter(20.0, 200)
    largest = 0
    # 200k distinct devices, 100 new ones a second, each heard from once.
    for n in range(200_000):
        assert limiter.allow(f"dev-{n}", T0 + n * 0.01)
        largest = max(largest, len(limiter))
    assert largest <= MIN_SWEEP_AT


def test_a_flood_of_devices_is_capped_and_a_limited_device_stays_limited() -> None:
    limiter = DeviceRateLimiter(1.0, 10, max_devices=100)
    assert take(limiter, "hog", T0, 10) == 10
    assert take(limiter, "halfway", T0, 5) == 5
    largest = 0
    for n in range(10_000):  # all at the same instant: no bucket has refilled
        assert limiter.allow(f"flood-{n}", T0)
        largest = max(largest, len(limiter))
    assert largest <= 100
    # The devices nearest to a full bucket were forgotten first; not these two.
    assert not limiter.allow("hog", T0)
    assert take(limiter, "halfway", T0, 10) == 5
    assert limiter.allow("hog", T0 + 1.0)


def test_settings_build_the_limiter_or_none_when_off() -> None:
    assert rate_limiter_from(Settings(device_rate_limit=0)) is None
    limiter = rate_limiter_from(Settings(device_rate_limit=2.5, device_rate_burst=7))
    assert limiter is not None
    assert (limiter.rate, limiter.burst) == (2.5, 7)
    assert take(limiter, "dev-1", T0, 10) == 7
    default = rate_limiter_from(Settings())
    assert default is not None
    assert (default.rate, default.burst) == (20.0, 200)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 10), (-1.0, 10), (1.0, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        DeviceRateLimiter(rate, burst)


# -- through ingest, into PostgreSQL -------------------------------------------

BURST = 200


@pytest.fixture
async def pool(pg15_database_url: str) -> AsyncIterator[Pool]:
    await migrate(pg15_database_url)
    pool = await open_pool(pg15_database_url, min_size=1, max_size=2)
    async with pool.connection() as conn:
        await create_devices(conn, *("flood", "buffered"))
    yield pool
    await pool.close()


async def rows(pool: Pool, sql: str) -> list[tuple[object, ...]]:
    async with pool.connection() as conn:
        return [tuple(r.values()) for r in await (await conn.execute(sql)).fetchall()]


async def test_excess_messages_are_rejected_and_kept_while_a_batch_counts_once(
    pg15_database_url: str, pool: Pool
) -> None:
    metrics = Metrics()
    writer = BatchWriter(pg15_database_url)
    batcher = Batcher(write=writer, metrics=metrics, max_messages=100, max_delay=0.02)
    consumer = IngestConsumer(
        batcher=batcher,
        topics=TopicScheme(),
        limits=DecodeLimits(max_payload_bytes=65_536, max_future_skew=timedelta(minutes=5)),
        metrics=metrics,
        # A rate too slow to refill during the test, so the counts are exact.
        rate_limiter=DeviceRateLimiter(0.001, BURST),
    )
    now = int(time.time())
    flood = [orjson.dumps({"message_id": f"m{i}", "t": float(i)}) for i in range(BURST + 50)]
    buffered = orjson.dumps(
        {"readings": [{"message_id": f"r{i}", "timestamp": now - i, "t": 1.0} for i in range(500)]}
    )
    writing = asyncio.create_task(batcher.run())
    try:
        await asyncio.gather(
            *(consumer.handle("devices/flood/telemetry", p) for p in flood),
            consumer.handle("devices/buffered/telemetry", buffered),
        )
        # Status, heartbeats and command results count too, in a bucket of their own.
        await asyncio.gather(
            *(consumer.handle("devices/flood/heartbeat", b"{}") for _ in range(BURST))
        )
        await consumer.handle("devices/flood/status", b'{"status": "online"}')
        # handle() has returned (the broker would now get its PUBACK): all is committed.
        stored = await rows(
            pool, "SELECT device_id, count(*) FROM telemetry GROUP BY device_id ORDER BY 1"
        )
        rejected = await rows(
            pool, "SELECT device_id, topic, reason, detail, payload FROM rejected_messages"
        )
    finally:
        await batcher.drain()
        await writing
        await writer.close()

    assert stored == [("buffered", 500), ("flood", BURST)]
    assert {(r[0], r[2], r[3]) for r in rejected} == {
        ("flood", "rate_limited", "over 0.001 messages/s per device (burst 200)")
    }
    telemetry = [r[4] for r in rejected if r[1] == "devices/flood/telemetry"]
    assert len(telemetry) == 50
    assert set(telemetry) <= set(flood)  # kept byte for byte
    assert [r[1] for r in rejected if r[1] != "devices/flood/telemetry"] == ["devices/flood/status"]
    stored_ids = await rows(pool, "SELECT message_id FROM message_ledger WHERE device_id = 'flood'")
    sent_ids = {orjson.loads(p)["message_id"] for p in flood}
    rejected_ids = {orjson.loads(p)["message_id"] for p in telemetry}
    assert {r[0] for r in stored_ids} == sent_ids - rejected_ids

    sample = metrics.registry.get_sample_value
    assert sample("fieldline_messages_rejected_total", {"reason": "rate_limited"}) == 51
    assert sample("fieldline_readings_stored_total") == BURST + 500


async def test_a_backlog_delivered_at_once_is_judged_by_when_it_was_sent(
    pg15_database_url: str, pool: Pool
) -> None:
    """After an outage the broker delivers a queue at once; a device that kept to its
    rate while sending is not punished for it. A device sending as fast is."""
    metrics = Metrics()
    writer = BatchWriter(pg15_database_url)
    batcher = Batcher(write=writer, metrics=metrics, max_messages=100, max_delay=0.02)
    consumer = IngestConsumer(
        batcher=batcher,
        topics=TopicScheme(),
        limits=DecodeLimits(max_payload_bytes=65_536, max_future_skew=timedelta(minutes=5)),
        metrics=metrics,
        rate_limiter=DeviceRateLimiter(1.0, 10),
    )
    now = int(time.time())
    # Ten minutes of one message a second, queued by the broker while ingest was away.
    queued = [
        orjson.dumps({"message_id": f"q{i}", "timestamp": now - 600 + i, "t": 1.0})
        for i in range(600)
    ]
    # The same count stamped within one second: sent at 600 messages/s.
    burst = [orjson.dumps({"message_id": f"b{i}", "timestamp": now, "t": 1.0}) for i in range(600)]
    writing = asyncio.create_task(batcher.run())
    try:
        # In order, as the broker delivers one device's queue (gather starts them in order).
        await asyncio.gather(*(consumer.handle("devices/patient/telemetry", p) for p in queued))
        await asyncio.gather(*(consumer.handle("devices/hasty/telemetry", p) for p in burst))
        stored = await rows(
            pool, "SELECT device_id, count(*) FROM telemetry GROUP BY device_id ORDER BY 1"
        )
    finally:
        await batcher.drain()
        await writing
        await writer.close()

    assert stored == [("hasty", 10), ("patient", 600)]


async def test_buffered_readings_flushed_after_a_fresh_one_are_stored(
    pg15_database_url: str, pool: Pool
) -> None:
    """A device back online sends a fresh reading, then flushes 30 readings from ten
    minutes ago, once as one batch (as docs/devices.md recommends) and once as 30
    messages. Judged by their old stamps after a fresh one, all but one were refused."""
    metrics = Metrics()
    writer = BatchWriter(pg15_database_url)
    batcher = Batcher(write=writer, metrics=metrics, max_messages=100, max_delay=0.02)
    consumer = IngestConsumer(
        batcher=batcher,
        topics=TopicScheme(),
        limits=DecodeLimits(max_payload_bytes=65_536, max_future_skew=timedelta(minutes=5)),
        metrics=metrics,
        rate_limiter=rate_limiter_from(Settings()),  # the defaults: 20/s, burst 200
    )
    now = int(time.time())
    fresh = orjson.dumps({"message_id": "fresh", "timestamp": now, "t": 1.0})
    buffered = [
        {"message_id": f"old-{i}", "timestamp": now - 600 + i, "t": float(i)} for i in range(30)
    ]
    as_batch = orjson.dumps(
        {"readings": [{**r, "message_id": f"batch-{r['message_id']}"} for r in buffered]}
    )
    writing = asyncio.create_task(batcher.run())
    try:
        await consumer.handle("devices/buffered/telemetry", fresh)
        await consumer.handle("devices/buffered/telemetry", as_batch)
        for reading in buffered:
            await consumer.handle("devices/buffered/telemetry", orjson.dumps(reading))
        stored = await rows(pool, "SELECT count(*) FROM telemetry")
        rejected = await rows(pool, "SELECT reason FROM rejected_messages")
    finally:
        await batcher.drain()
        await writing
        await writer.close()

    assert stored == [(61,)]
    assert rejected == []


async def test_a_redelivery_over_the_limit_is_a_duplicate_not_a_rejection(
    pg15_database_url: str, pool: Pool
) -> None:
    """The broker resends what was not acknowledged (a restart, a lost PUBACK): copies of
    stored messages, over the limit or not, are de-duplicated; only new ones are refused."""
    metrics = Metrics()
    writer = BatchWriter(pg15_database_url)
    batcher = Batcher(write=writer, metrics=metrics, max_messages=100, max_delay=0.02)
    consumer = IngestConsumer(
        batcher=batcher,
        topics=TopicScheme(),
        limits=DecodeLimits(max_payload_bytes=65_536, max_future_skew=timedelta(minutes=5)),
        metrics=metrics,
        rate_limiter=DeviceRateLimiter(0.001, 5),  # five, then (nearly) none
    )
    sent = [orjson.dumps({"message_id": f"m{i}", "t": float(i)}) for i in range(5)]
    batch = orjson.dumps({"message_id": "b", "readings": [{"t": 1.0}, {"t": 2.0}]})
    writing = asyncio.create_task(batcher.run())
    try:
        for payload in sent[:4]:
            await consumer.handle("devices/flood/telemetry", payload)
        await consumer.handle("devices/flood/telemetry", batch)
        # Redelivered: the four and the batch again, one of them twice in one batch.
        await asyncio.gather(
            *(consumer.handle("devices/flood/telemetry", p) for p in [*sent[:4], batch, sent[0]])
        )
        await consumer.handle("devices/flood/telemetry", sent[4])  # new, over the limit
        rejected = await rows(pool, "SELECT reason, payload FROM rejected_messages")
        stored = await rows(pool, "SELECT count(*) FROM telemetry")
    finally:
        await batcher.drain()
        await writing
        await writer.close()

    assert rejected == [("rate_limited", sent[4])]
    assert stored == [(6,)]
    sample = metrics.registry.get_sample_value
    assert sample("fieldline_messages_rejected_total", {"reason": "rate_limited"}) == 1
    assert sample("fieldline_messages_duplicate_total") == 6
    assert sample("fieldline_readings_duplicate_total") == 7
