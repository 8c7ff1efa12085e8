"""Retention against real PostgreSQL: whole partitions past their tier's age go, charts stay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from fieldline.domain.readings import Reading
from fieldline.storage import partitions, retention, telemetry
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.migrate import migrate
from fieldline.storage.partitions import DAILY, HOURLY, RAW
from fieldline.storage.telemetry import Aggregate
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.conftest import create_devices

# Retention is told the time, so the partitions' names below hold on any day.
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
FIRST = datetime(2026, 8, 29, tzinfo=UTC)  # 100 days of hourly readings up to NOW
KEEP = {RAW: 30, HOURLY: 40, DAILY: 0}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    await migrate(database_url)
    pool = await open_pool(database_url, min_size=1, max_size=2)
    async with pool.connection() as conn:
        await create_devices(conn, "cold-room")
        hours = int((NOW - FIRST) / timedelta(hours=1))
        readings = [
            Reading(
                message_id=f"m{i}",
                time=FIRST + timedelta(hours=i, minutes=i % 60),
                metrics={"temperature": float(i % 17) - 4.5},
                attributes={},
            )
            for i in range(hours)
        ]
        batch = Batch(telemetry=[DeviceReadings("cold-room", NOW, readings)])
        await write_batch(conn, batch, PartitionCache())  # type: ignore[arg-type]
    yield pool
    await pool.close()


async def names(pool: Pool, tier: partitions.Tier) -> list[str]:
    async with pool.connection() as conn:
        return [p.name for p in await partitions.partitions(conn, tier)]  # type: ignore[arg-type]


async def chart(pool: Pool, start: datetime, bucket: timedelta) -> list[tuple[datetime, float]]:
    """The cold room's temperature as a chart asks for it: avg, min, max and count."""
    lines = []
    async with pool.connection() as conn:
        for aggregate in (Aggregate.AVG, Aggregate.MIN, Aggregate.MAX, Aggregate.COUNT):
            points = await telemetry.bucketed_points(
                conn,
                device_id="cold-room",
                metric="temperature",
                start=start,
                end=NOW,
                bucket=bucket,
                aggregate=aggregate,
            )
            lines += [(p.time, round(p.value, 9)) for p in points]
    return lines


def days(first: date, last: date) -> list[str]:
    return [
        f"telemetry_p{first + timedelta(days=n):%Y%m%d}" for n in range((last - first).days + 1)
    ]


async def test_retention_drops_whole_partitions_past_their_age_and_charts_read_rollups(
    pool: Pool,
) -> None:
    year_by_day = await chart(pool, FIRST, timedelta(days=1))
    autumn_by_hour = await chart(pool, datetime(2026, 10, 1, tzinfo=UTC), timedelta(hours=1))
    assert len(year_by_day) == 4 * 101  # a bucket a day (the last half a day), four aggregates
    assert await names(pool, RAW) == days(date(2026, 8, 29), date(2026, 12, 7))

    async with pool.connection() as conn:
        runs = await retention.apply(conn, KEEP, NOW)

    # Raw points: a day goes once all of it is 30 days old (before 2026-11-07 12:00).
    assert await names(pool, RAW) == days(date(2026, 11, 7), date(2026, 12, 7))
    # Hourly rollups: a month goes once all of it is 40 days old (before 2026-10-28 12:00).
    assert await names(pool, HOURLY) == [
        "telemetry_hourly_p202610",
        "telemetry_hourly_p202611",
        "telemetry_hourly_p202612",
    ]
    assert await names(pool, DAILY) == ["telemetry_daily_p2026"]  # kept for good
    dropped = {run.tier.name: [p.name for p in run.dropped] for run in runs}
    assert dropped == {
        "raw": days(date(2026, 8, 29), date(2026, 11, 6)),
        "hourly": ["telemetry_hourly_p202608", "telemetry_hourly_p202609"],
        "daily": [],
    }

    # The same charts, now answered by the rollups where the raw points are gone.
    assert await chart(pool, FIRST, timedelta(days=1)) == year_by_day
    assert await chart(pool, datetime(2026, 10, 1, tzinfo=UTC), timedelta(hours=1)) == (
        autumn_by_hour
    )
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT tier, dropped, bytes > 0 AS sized FROM retention_runs WHERE tier = 'raw'"
            )
        ).fetchone()
        assert row == {"tier": "raw", "dropped": dropped["raw"], "sized": True}

        # A second run finds nothing more to drop and records that.
        again = await retention.apply(conn, KEEP, NOW)  # type: ignore[arg-type]
        assert [run.dropped for run in again] == [[], [], []]
        ran = await (await conn.execute("SELECT dropped FROM retention_runs")).fetchall()
        assert ran == [{"dropped": []}] * 3


async def test_a_detach_cut_short_is_finished_by_the_next_run(pool: Pool) -> None:
    """A worker killed between a concurrent detach's two transactions leaves the partition
    'detach pending'; the next run finalises it instead of failing on it for good."""
    async with pool.connection() as conn:
        oldest = (await partitions.partitions(conn, RAW))[0]
        # What the first transaction of DETACH ... CONCURRENTLY leaves behind.
        await conn.execute(
            "UPDATE pg_inherits SET inhdetachpending = true WHERE inhrelid = %s::regclass",
            (oldest.name,),
        )
        (pending,) = [p for p in await partitions.partitions(conn, RAW) if p.name == oldest.name]
        assert pending.detaching
        runs = await retention.apply(conn, {RAW: 30}, NOW)
    assert oldest.name in [p.name for p in runs[0].dropped]
    assert oldest.name not in await names(pool, RAW)


async def test_ingest_keeps_writing_while_retention_waits_for_an_open_batch(
    pool: Pool, database_url: str
) -> None:
    """A drop waits for transactions that use the table, such as a batch being written;
    a plain DROP of a partition would meanwhile queue an exclusive lock on the whole
    table that holds back every later batch. Retention detaches concurrently instead:
    a batch that starts while it waits is written at once."""
    async with (
        await psycopg.AsyncConnection.connect(database_url) as open_batch,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as later_batch,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as worker,
    ):
        # An ingest transaction in progress (not committed) on the raw points.
        await open_batch.execute(
            "INSERT INTO telemetry (time, device_id, metric, value)"
            " VALUES (%s, 'cold-room', 'door', 1)",
            (NOW - timedelta(minutes=5),),
        )
        dropping = asyncio.create_task(retention.apply(worker, {RAW: 30}, NOW))
        try:
            while not await waiting_for_lock(pool, worker.info.backend_pid):  # for the batch
                assert not dropping.done(), dropping
                await asyncio.sleep(0.05)

            # A batch that starts now is not queued behind retention.
            await later_batch.execute("SET lock_timeout = '5s'")
            await later_batch.execute(
                "INSERT INTO telemetry (time, device_id, metric, value)"
                " VALUES (%s, 'cold-room', 'door', 2)",
                (NOW - timedelta(minutes=4),),
            )
            assert not dropping.done()
        finally:
            await open_batch.commit()  # whatever happened, so that retention can finish
            runs = await dropping
    assert len(runs[0].dropped) == 70  # 2026-08-29 to 2026-11-06
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT value FROM telemetry WHERE metric = 'door' ORDER BY time")
        ).fetchall()
    assert rows == [{"value": 1.0}, {"value": 2.0}]


async def waiting_for_lock(pool: Pool, pid: int) -> bool:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT wait_event_type = 'Lock' AS waiting FROM pg_stat_activity WHERE pid = %s",
                (pid,),
            )
        ).fetchone()
    return bool(row and row["waiting"])


async def test_a_late_reading_of_a_dropped_day_is_stored_by_a_writer_that_wrote_that_day(
    pool: Pool,
) -> None:
    """An ingest process that stored a day before retention dropped it stores a late
    reading of that day afterwards (its partition made again), instead of failing the
    batch; the rollups count it, and the next run drops the day again."""
    day = datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0) - timedelta(days=40)
    cache = PartitionCache()  # one ingest process, running all along

    def batch(name: str, value: float) -> Batch:
        reading = Reading(message_id=name, time=day, metrics={"door": value}, attributes={})
        return Batch(telemetry=[DeviceReadings("cold-room", day, [reading])])

    async with pool.connection() as conn:
        await write_batch(conn, batch("before", 1.0), cache)  # type: ignore[arg-type]
        runs = await retention.apply(conn, {RAW: 30}, datetime.now(UTC))  # type: ignore[arg-type]
        assert f"telemetry_p{day:%Y%m%d}" in [p.name for p in runs[0].dropped]

        written = await write_batch(conn, batch("late", 2.0), cache)  # type: ignore[arg-type]

        assert written.readings_stored == 1
        hourly = await (
            await conn.execute(
                "SELECT count, sum FROM telemetry_hourly WHERE metric = 'door' AND hour = %s",
                (day,),
            )
        ).fetchone()
        assert hourly == {"count": 2, "sum": 3.0}
        runs = await retention.apply(conn, {RAW: 30}, datetime.now(UTC))  # type: ignore[arg-type]
        assert [p.name for p in runs[0].dropped] == [f"telemetry_p{day:%Y%m%d}"]
