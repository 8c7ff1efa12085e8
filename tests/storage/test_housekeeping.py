"""The worker's jobs against real PostgreSQL: what each changes, and one worker at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from fieldline.config import Settings
from fieldline.ops.metrics import Metrics
from fieldline.storage import housekeeping
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.locks import JobLock
from fieldline.storage.migrate import migrate
from fieldline.storage.writer import Batch, PartitionCache, Presence, write_batch
from fieldline.worker.jobs import HOUSEKEEPING
from fieldline.worker.service import Worker
from tests.conftest import create_devices

NOW = datetime.now(UTC)


@pytest.fixture
async def pool(pg15_database_url: str) -> AsyncIterator[Pool]:
    await migrate(pg15_database_url)
    pool = await open_pool(pg15_database_url, min_size=1, max_size=4)
    async with pool.connection() as conn:
        await create_devices(conn, *("quiet", "chatty", "never"))
    yield pool
    await pool.close()


async def scalar(pool: Pool, sql: str, *params: object) -> object:
    async with pool.connection() as conn:
        row = await (await conn.execute(sql, params)).fetchone()
    assert row is not None
    return next(iter(row.values()))


async def test_partitions_exist_ahead_of_time(pool: Pool) -> None:
    today = date(2031, 3, 1)
    async with pool.connection() as conn:
        assert await housekeeping.create_partitions_ahead(conn, today, 2) == 3
        # Idempotent: a second run (or a second worker later) changes nothing.
        assert await housekeeping.create_partitions_ahead(conn, today, 2) == 3
    names = await scalar(
        pool,
        "SELECT array_agg(c.relname ORDER BY c.relname) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'telemetry'::regclass",
    )
    assert names == ["telemetry_p20310301", "telemetry_p20310302", "telemetry_p20310303"]
    rollups = await scalar(
        pool,
        "SELECT array_agg(c.relname ORDER BY c.relname) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent IN"
        " ('telemetry_hourly'::regclass, 'telemetry_daily'::regclass)",
    )
    assert rollups == ["telemetry_daily_p2031", "telemetry_hourly_p203103"]


async def test_old_message_ids_are_forgotten_and_recent_ones_kept(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO message_ledger (device_id, message_id, received_at) "
            "SELECT 'chatty', 'old-' || i, %s FROM generate_series(1, 120000) AS i",
            (NOW - timedelta(days=40),),
        )
        await conn.execute(
            "INSERT INTO message_ledger (device_id, message_id, received_at) "
            "VALUES ('chatty', 'recent', %s)",
            (NOW - timedelta(days=1),),
        )
        forgotten = await housekeeping.forget_message_ids(conn, NOW - timedelta(days=30))
    assert forgotten == 120_000  # in chunks, so no statement holds its locks for long
    assert await scalar(pool, "SELECT array_agg(message_id) FROM message_ledger") == ["recent"]


async def test_silent_devices_go_offline_with_a_status_event(pool: Pool) -> None:
    async with pool.connection() as conn:
        await write_batch(
            conn,  # type: ignore[arg-type]
            Batch(
                presence=[
                    Presence("quiet", NOW - timedelta(minutes=10)),
                    Presence("chatty", NOW - timedelta(seconds=5)),
                ]
            ),
            PartitionCache(),
        )
        timed_out = await housekeeping.mark_silent_offline(conn, NOW - timedelta(minutes=5), NOW)
        again = await housekeeping.mark_silent_offline(conn, NOW - timedelta(minutes=5), NOW)
    assert timed_out == ["quiet"]
    assert again == []  # already offline: no second event
    statuses = await scalar(
        pool, "SELECT json_object_agg(device_id, status ORDER BY device_id) FROM devices"
    )
    assert statuses == {"chatty": "online", "never": "never_seen", "quiet": "offline"}
    events = await scalar(
        pool,
        "SELECT json_agg(json_build_array(device_id, status, detail)) FROM device_status_events",
    )
    assert events == [["quiet", "offline", {"reason": "timeout"}]]


async def test_a_job_another_worker_holds_is_skipped(pool: Pool) -> None:
    async with pool.connection() as holder, pool.connection() as other:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock(%s)", (int(JobLock.SILENT_OFFLINE),))
            skipped = await housekeeping.mark_silent_offline(other, NOW, NOW)
        assert skipped is None
        assert await housekeeping.mark_silent_offline(other, NOW, NOW) == []


async def test_the_worker_runs_every_job_and_counts_them(pool: Pool, tmp_path: Path) -> None:
    async with pool.connection() as conn:
        await write_batch(
            conn,  # type: ignore[arg-type]
            Batch(presence=[Presence("quiet", NOW - timedelta(hours=1))]),
            PartitionCache(),
        )
    metrics = Metrics()
    settings = Settings(data_dir=tmp_path, online_timeout_seconds=60, worker_interval_seconds=3600)
    worker = Worker(settings=settings, pool=pool, metrics=metrics)
    stopping = asyncio.Event()
    running = asyncio.create_task(worker.run(stopping))
    while worker.rounds[HOUSEKEEPING.name] == 0:
        await asyncio.sleep(0.02)
    stopping.set()
    await asyncio.wait_for(running, timeout=5)  # returns at once, not after the interval

    sample = metrics.registry.get_sample_value
    for job in ("partitions", "forget_message_ids", "forget_rejected_messages", "silent_offline"):
        assert sample("fieldline_worker_jobs_total", {"job": job, "outcome": "done"}) == 1
    assert sample("fieldline_devices_timed_out_total") == 1
    assert await scalar(pool, "SELECT status FROM devices WHERE device_id = 'quiet'") == "offline"


async def test_rejected_messages_are_kept_for_their_retention_only(pool: Pool) -> None:
    async with pool.connection() as conn:
        for age_days, topic in ((45, "old"), (2, "recent")):
            await conn.execute(
                "INSERT INTO rejected_messages (received_at, device_id, topic, reason, payload)"
                " VALUES (%s, 'chatty', %s, 'invalid_json', 'x')",
                (NOW - timedelta(days=age_days), topic),
            )
        deleted = await housekeeping.forget_rejected_messages(conn, NOW - timedelta(days=30))
    assert deleted == 1
    assert await scalar(pool, "SELECT array_agg(topic) FROM rejected_messages") == ["recent"]
