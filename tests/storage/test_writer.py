"""The one writer against real PostgreSQL 15 and the embedded server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from fieldline.domain.devices import ConnectionStatus
from fieldline.domain.readings import Reading
from fieldline.storage import devices as device_store
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.migrate import available_migrations, migrate
from fieldline.storage.writer import (
    Batch,
    DeviceReadings,
    LimitedMessage,
    PartitionCache,
    Presence,
    RecentPresence,
    RejectedMessage,
    unstorable,
    unstorable_detail,
    write_batch,
)
from tests.conftest import create_devices

T0 = datetime(2026, 11, 24, 23, 59, 58, tzinfo=UTC)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    await migrate(database_url)
    pool = await open_pool(database_url, min_size=1, max_size=2)
    async with pool.connection() as conn:
        await create_devices(conn, *("dev-1", "dev-2"))
    yield pool
    await pool.close()


def reading(message_id: str | None, seconds: float, **metrics: float) -> Reading:
    return Reading(
        message_id=message_id, time=T0 + timedelta(seconds=seconds), metrics=metrics, attributes={}
    )


async def write(
    database_url: str,
    batch: Batch,
    partitions: PartitionCache | None = None,
    recent: RecentPresence | None = None,
):
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        return await write_batch(conn, batch, partitions or PartitionCache(), recent)


async def rows(pool: Pool, sql: str) -> list[tuple[object, ...]]:
    async with pool.connection() as conn:
        return [tuple(r.values()) for r in await (await conn.execute(sql)).fetchall()]


async def test_migrations_apply_once(database_url: str) -> None:
    first = await migrate(database_url)
    assert [m.version for m in first] == [m.version for m in available_migrations()]
    assert await migrate(database_url) == []


async def test_points_are_stored_once_per_message_id(database_url: str, pool: Pool) -> None:
    batch = Batch(
        telemetry=[
            DeviceReadings("dev-1", T0, [reading("m1", 0, t=1.0, h=10.0), reading("m2", 1, t=2.0)]),
            DeviceReadings("dev-1", T0, [reading("m1", 0, t=1.0, h=10.0)]),  # repeat in the batch
            DeviceReadings("dev-2", T0, [reading("m1", 0, t=5.0)]),  # same id, other device
            DeviceReadings("dev-2", T0, [reading(None, 3, t=6.0)]),
        ]
    )
    result = await write(database_url, batch)
    assert (result.readings_stored, result.duplicates, result.points) == (4, 1, 5)
    again = await write(
        database_url,
        Batch(
            telemetry=[
                DeviceReadings("dev-1", T0, [reading("m2", 1, t=2.0), reading("m3", 4, t=3.0)])
            ]
        ),
    )
    assert (again.readings_stored, again.duplicates, again.points) == (1, 1, 1)
    stored = await rows(
        pool, "SELECT device_id, metric, value FROM telemetry ORDER BY device_id, metric, time"
    )
    assert stored == [
        ("dev-1", "h", 10.0),
        ("dev-1", "t", 1.0),
        ("dev-1", "t", 2.0),
        ("dev-1", "t", 3.0),
        ("dev-2", "t", 5.0),
        ("dev-2", "t", 6.0),
    ]


async def test_points_across_midnight_land_in_day_partitions(database_url: str, pool: Pool) -> None:
    await write(
        database_url,
        Batch(
            telemetry=[
                DeviceReadings("dev-1", T0, [reading("a", 0, t=1.0), reading("b", 5, t=2.0)])
            ]
        ),
    )
    partitions = await rows(
        pool, "SELECT tableoid::regclass::text, count(*) FROM telemetry GROUP BY 1 ORDER BY 1"
    )
    assert partitions == [("telemetry_p20261124", 1), ("telemetry_p20261125", 1)]


async def test_latest_values_and_attributes_keep_the_newest(database_url: str, pool: Pool) -> None:
    newer = Reading("n", T0 + timedelta(seconds=10), {"t": 2.0}, {"mode": "eco"})
    older = Reading("o", T0, {"t": 1.0, "h": 5.0}, {"mode": "boost"})
    await write(database_url, Batch(telemetry=[DeviceReadings("dev-1", T0, [newer, older])]))
    late = Reading("l", T0 - timedelta(hours=1), {"t": 0.5}, {"mode": "old"})
    await write(database_url, Batch(telemetry=[DeviceReadings("dev-1", T0, [late])]))
    assert await rows(pool, "SELECT metric, value FROM telemetry_latest ORDER BY metric") == [
        ("h", 5.0),
        ("t", 2.0),
    ]
    assert await rows(pool, "SELECT key, value FROM device_attributes") == [("mode", "eco")]


async def test_presence_follows_arrival_order(database_url: str, pool: Pool) -> None:
    seen = T0 + timedelta(seconds=30)
    await write(
        database_url,
        Batch(
            presence=[
                Presence("dev-1", T0, ConnectionStatus.ONLINE, firmware_version="v1"),
                Presence("dev-1", seen, ConnectionStatus.OFFLINE),
                Presence("dev-2", T0),  # heartbeat
            ]
        ),
    )
    async with pool.connection() as conn:
        one = await device_store.get_device(conn, "dev-1")
        two = await device_store.get_device(conn, "dev-2")
    assert (one.reported_status, one.last_seen, one.firmware_version) == (
        ConnectionStatus.OFFLINE,
        seen,
        "v1",
    )
    assert (two.reported_status, two.last_seen) == (ConnectionStatus.ONLINE, T0)
    events = await rows(pool, "SELECT device_id, status FROM device_status_events ORDER BY time")
    assert events == [("dev-1", "online"), ("dev-1", "offline")]


async def test_rejected_messages_are_kept_byte_for_byte(database_url: str, pool: Pool) -> None:
    payload = b'\xff{"t": NaN}'
    await write(
        database_url,
        Batch(
            rejected=[
                RejectedMessage(
                    T0, "dev-1", "devices/dev-1/telemetry", "invalid_json", "bad", payload
                )
            ]
        ),
    )
    assert await rows(pool, "SELECT device_id, reason, payload FROM rejected_messages") == [
        ("dev-1", "invalid_json", payload)
    ]


async def test_concurrent_writers_store_each_message_once(database_url: str, pool: Pool) -> None:
    """Two ingest processes receiving the same redelivered messages store them once."""
    import asyncio

    batch = Batch(
        telemetry=[
            DeviceReadings("dev-1", T0, [reading(f"m{i}", i, t=float(i)) for i in range(200)])
        ]
    )
    results = await asyncio.gather(*(write(database_url, batch) for _ in range(4)))
    assert sum(r.readings_stored for r in results) == 200
    assert await rows(pool, "SELECT count(*) FROM telemetry") == [(200,)]


async def test_hourly_and_daily_rollups_count_each_stored_point_once(
    database_url: str, pool: Pool
) -> None:
    """Rollups agree with the raw points whatever arrives: redeliveries, late readings of
    an hour (and a day) already rolled up, readings without an id, and two batches at
    once. The readings span midnight, so two days of each series are rolled up."""
    hour = 3600.0
    first = [reading(f"a{i}", i * 600, temp=float(i), rh=50.0 - i) for i in range(12)]
    late = [reading(f"b{i}", -3 * hour + i * 7, temp=-float(i)) for i in range(5)]
    unnamed = [reading(None, 2 * hour + i, temp=100.0 + i) for i in range(3)]
    await write(database_url, Batch(telemetry=[DeviceReadings("dev-1", T0, first)]))
    # A redelivery of half of the first batch, mixed with new and late readings.
    again = Batch(telemetry=[DeviceReadings("dev-1", T0, first[:6] + late + unnamed)])
    other = Batch(telemetry=[DeviceReadings("dev-2", T0, first)])
    await asyncio.gather(write(database_url, again), write(database_url, other))

    raw = await rows(
        pool,
        "SELECT device_id, metric,"
        " date_bin('1 hour', time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS hour,"
        " count(*), sum(value), min(value), max(value)"
        " FROM telemetry GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    rollups = await rows(
        pool,
        "SELECT device_id, metric, hour, count, sum, min, max"
        " FROM telemetry_hourly ORDER BY 1, 2, 3",
    )
    assert rollups == raw
    points = sum(int(row[3]) for row in rollups)  # type: ignore[call-overload]
    assert points == (12 * 2 + 5 + 3) + 12 * 2

    raw_days = await rows(
        pool,
        "SELECT device_id, metric,"
        " date_bin('1 day', time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS day,"
        " count(*), sum(value), min(value), max(value)"
        " FROM telemetry GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    daily = await rows(
        pool,
        "SELECT device_id, metric, day, count, sum, min, max FROM telemetry_daily ORDER BY 1, 2, 3",
    )
    assert daily == raw_days
    assert {row[2] for row in daily} == {
        datetime(2026, 11, 24, tzinfo=UTC),
        datetime(2026, 11, 25, tzinfo=UTC),
    }


async def test_a_busy_device_is_marked_seen_about_once_a_second(
    database_url: str, pool: Pool
) -> None:
    recent = RecentPresence()

    async def heard(ms: int, reported: ConnectionStatus | None = None) -> tuple[object, ...]:
        seen = T0 + timedelta(milliseconds=ms)
        await write(
            database_url, Batch(presence=[Presence("dev-1", seen, reported)]), recent=recent
        )
        (row,) = await rows(pool, "SELECT last_seen, status FROM devices WHERE device_id = 'dev-1'")
        return row

    assert await heard(0) == (T0, "online")
    for ms in range(50, 1000, 50):  # batches within the second: no new row version
        assert await heard(ms) == (T0, "online")
    assert await heard(1000) == (T0 + timedelta(seconds=1), "online")
    # A status the device reports is written at once, and so is the next word after it.
    assert await heard(1100, ConnectionStatus.OFFLINE) == (
        T0 + timedelta(milliseconds=1100),
        "offline",
    )
    assert await heard(1200) == (T0 + timedelta(milliseconds=1200), "online")


async def test_what_the_database_refuses_for_a_message_is_told_from_what_retrying_cures(
    database_url: str, pool: Pool
) -> None:
    nul = Reading("m", T0, {"t": 1.0}, {"mode": "a\x00b"})
    surrogate = Reading("s", T0, {"\ud800": 1.0}, {})
    for bad in (nul, surrogate):
        with pytest.raises((psycopg.DataError, UnicodeEncodeError)) as refused:
            await write(database_url, Batch(telemetry=[DeviceReadings("dev-1", T0, [bad])]))
        assert unstorable(refused.value), refused.value
        assert unstorable_detail(refused.value)
    with pytest.raises(psycopg.OperationalError) as unreachable:
        await psycopg.AsyncConnection.connect("postgresql://nobody@127.0.0.1:1/none")
    assert not unstorable(unreachable.value)
    assert await rows(pool, "SELECT count(*) FROM telemetry") == [(0,)]


async def test_a_rejection_quoting_unstorable_text_is_kept_escaped(
    database_url: str, pool: Pool
) -> None:
    """A rejection must never fail its batch: its text is made storable, its bytes kept."""
    payload = b'{"\\u0000": 1}'
    await write(
        database_url,
        Batch(
            rejected=[
                RejectedMessage(
                    T0, "dev-1", "devices/dev-1/te\x00st", "invalid_name", "name '\ud800'", payload
                )
            ]
        ),
    )
    assert await rows(pool, "SELECT topic, detail, payload FROM rejected_messages") == [
        ("devices/dev-1/te\\x00st", "name '\\ud800'", payload)
    ]


async def test_over_the_limit_a_copy_is_a_duplicate_and_a_new_message_rejected(
    database_url: str, pool: Pool
) -> None:
    await write(
        database_url, Batch(telemetry=[DeviceReadings("dev-1", T0, [reading("a", 0, t=1)])])
    )

    def limited(*readings: Reading) -> LimitedMessage:
        return LimitedMessage(
            DeviceReadings("dev-1", T0, list(readings)),
            RejectedMessage(T0, "dev-1", "devices/dev-1/telemetry", "rate_limited", "over", b"x"),
        )

    result = await write(
        database_url,
        Batch(
            telemetry=[DeviceReadings("dev-1", T0, [reading("b", 1, t=2)])],
            limited=[
                limited(reading("a", 0, t=1)),  # stored before
                limited(reading("b", 1, t=2)),  # stored in this very batch
                limited(reading("a", 0, t=1), reading("c", 2, t=3)),  # one new reading
                limited(reading(None, 3, t=4)),  # no id: cannot be known
            ],
        ),
    )
    assert (result.duplicate_messages, result.duplicates) == (2, 2)
    assert result.rejected_reasons == ("rate_limited", "rate_limited")
    assert await rows(pool, "SELECT count(*) FROM rejected_messages") == [(2,)]
    assert await rows(pool, "SELECT count(*) FROM telemetry") == [(2,)]
