"""The Parquet archive against real PostgreSQL, a local directory and a real S3-compatible
server: what it writes, what DuckDB reads from it, late readings, retention waiting
for it, verification, and import back without duplicates."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg.rows import dict_row

from fieldline.archive import layout
from fieldline.archive import run as archiving
from fieldline.archive.catalog import entries
from fieldline.archive.load import import_hours
from fieldline.archive.verify import verify
from fieldline.blobs.base import BlobStore
from fieldline.blobs.open import location, open_store
from fieldline.domain.readings import Reading
from fieldline.storage import archive, retention
from fieldline.storage.migrate import migrate
from fieldline.storage.partitions import DAILY, HOURLY, RAW
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.conftest import PgServer, S3Server, create_devices

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
FIRST = datetime(2026, 11, 30, tzinfo=UTC)  # a week before NOW's day
DEVICES = ("pump-2", "pump-10", "cold-room")
# Names CSV and Parquet must carry through untouched, and values that must come back
# bit for bit.
METRICS = ("temperature", "flow,l/min", 'say "hi"', "back\\slash", "température")
VALUES = (0.1 + 0.2, -4.5, 1e300, 5e-324, 123456789.123456789, -0.0, 21.0)


def readings(start: datetime, hours: int, every: timedelta) -> list[Reading]:
    found = []
    moment = start
    n = 0
    while moment < start + timedelta(hours=hours):
        found.append(
            Reading(
                message_id=f"m{moment.timestamp()}",
                time=moment,
                metrics={m: VALUES[(n + i) % len(VALUES)] + n for i, m in enumerate(METRICS)},
                attributes={},
            )
        )
        moment += every
        n += 1
    return found


async def store_readings(conn: Any, device: str, found: list[Reading]) -> None:
    batch = Batch(telemetry=[DeviceReadings(device, NOW, found)])
    await write_batch(conn, batch, PartitionCache())


async def seed(url: str) -> None:
    await migrate(url)
    async with await connect(url) as conn:
        await create_devices(conn, *DEVICES)
        hours = int((NOW - FIRST) / timedelta(hours=1))
        for i, device in enumerate(DEVICES):
            # Microseconds in the times: they must survive the trip.
            start = FIRST + timedelta(seconds=i, microseconds=123457)
            await store_readings(conn, device, readings(start, hours, timedelta(minutes=7)))


@pytest.fixture
async def seeded(database_url: str) -> str:
    await seed(database_url)
    return database_url


@pytest.fixture
async def seeded15(pg15_database_url: str) -> str:
    await seed(pg15_database_url)
    return pg15_database_url


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)


async def archive_now(url: str, store: BlobStore, now: datetime = NOW) -> archiving.Due:
    async with await connect(url) as conn:
        due = await archiving.due(conn, store.url, now)
        await archiving.write(conn, store, store.url, due)
    return due


def raw_points(url: str, until: datetime = NOW) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT device_id, metric, time, value FROM telemetry WHERE time < %s"
            " ORDER BY device_id, time, metric, value",
            (until,),
        ).fetchall()


def rollups(url: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()  # type: ignore[call-overload,no-any-return]


def same_values(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Equal, doubles bit for bit (-0.0 is not 0.0)."""
    return len(a) == len(b) and all(
        x[:-1] == y[:-1] and math.copysign(1, x[-1]) == math.copysign(1, y[-1]) and x[-1] == y[-1]
        for x, y in zip(a, b, strict=True)
    )


def duck_points(root: Path) -> list[tuple[Any, ...]]:
    """The archive as a third-party engine reads it: DuckDB over the Hive-partitioned tree."""
    rows = duckdb.sql(
        "SELECT device_id, metric, time, value FROM read_parquet("
        f"'{root}/points/**/*.parquet', hive_partitioning = true)"
        " ORDER BY device_id, time, metric, value"
    ).fetchall()
    return [(d, m, t.astimezone(UTC), v) for d, m, t, v in rows]


async def test_closed_hours_are_archived_once_and_duckdb_reads_them_as_stored(
    seeded: str, tmp_path: Path
) -> None:
    store = open_store(str(tmp_path / "archive"))
    due = await archive_now(seeded, store)

    # Every closed hour (the one ending at NOW is within the grace), and every whole day.
    assert due.hours == [FIRST + timedelta(hours=h) for h in range(7 * 24 + 11)]
    assert due.days == [FIRST + timedelta(days=d) for d in range(7)]
    keys = [blob.key for blob in store.list()]
    assert "points/date=2026-11-30/hour=00/points.parquet" in keys
    assert "points/date=2026-12-07/hour=10/_manifest.json" in keys
    assert "points/date=2026-12-07/hour=11/points.parquet" not in keys
    assert "daily/date=2026-12-06/daily.parquet" in keys
    assert len(keys) == 2 * (len(due.hours) + len(due.days))

    closed = NOW - timedelta(hours=1)
    stored = raw_points(seeded, closed)
    assert same_values(duck_points(tmp_path / "archive"), stored)
    # The partition columns come from the directories: a date, and the hour as written.
    ((date, hour, count),) = duckdb.sql(
        f"SELECT date, hour, count(*) FROM read_parquet('{tmp_path}/archive/points/**/*.parquet',"
        " hive_partitioning = true) GROUP BY ALL ORDER BY ALL LIMIT 1"
    ).fetchall()
    assert (date.isoformat(), hour, count) == ("2026-11-30", "00", 3 * 9 * len(METRICS))

    # Each file sorted by device and time, its manifest true to it.
    file = tmp_path / "archive" / layout.points_key(FIRST + timedelta(hours=5))
    table = pq.read_table(file)
    order = list(zip(table["device_id"].to_pylist(), table["time"].to_pylist(), strict=True))
    assert order == sorted(order)
    manifest = layout.Manifest.from_json(
        store.get_bytes(layout.manifest_key(layout.points_key(FIRST + timedelta(hours=5))))
    )
    assert (manifest.rows, manifest.bytes) == (table.num_rows, file.stat().st_size)
    assert pq.ParquetFile(file).metadata.row_group(0).column(0).compression == "ZSTD"

    daily = duckdb.sql(
        f"SELECT device_id, metric, day, count, sum, min, max, avg FROM read_parquet("
        f"'{tmp_path}/archive/daily/**/*.parquet', hive_partitioning = true) ORDER BY ALL"
    ).fetchall()
    with psycopg.connect(seeded) as conn:
        expected = conn.execute(
            "SELECT device_id, metric, (day AT TIME ZONE 'UTC')::date, count, sum, min, max,"
            " sum / count FROM telemetry_daily WHERE day < %s ORDER BY 1, 2, 3",
            (NOW.replace(hour=0),),
        ).fetchall()
    assert daily == expected

    # A second run finds nothing to do.
    assert (await archive_now(seeded, store)).files == 0


async def test_a_late_reading_rewrites_its_hour_and_day(seeded15: str, tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "archive"))
    await archive_now(seeded15, store)
    late = datetime(2026, 12, 5, 3, 30, 0, 500, tzinfo=UTC)
    async with await connect(seeded15) as conn:
        reading = Reading(
            message_id="late-1", time=late, metrics={"temperature": -273.0}, attributes={}
        )
        await store_readings(conn, "pump-2", [reading])
        due = await archiving.due(conn, store.url, NOW)
    assert due.hours == [late.replace(minute=0, second=0, microsecond=0)]
    assert due.days == [late.replace(hour=0, minute=0, second=0, microsecond=0)]
    await archive_now(seeded15, store)
    assert ("pump-2", "temperature", late, -273.0) in duck_points(tmp_path / "archive")
    assert same_values(
        duck_points(tmp_path / "archive"), raw_points(seeded15, NOW - timedelta(hours=1))
    )


async def test_retention_waits_for_the_archive_then_import_brings_points_back(
    seeded15: str, tmp_path: Path
) -> None:
    store = open_store(str(tmp_path / "archive"))
    target = location(str(tmp_path / "archive"))
    before = raw_points(seeded15)
    hourly, daily = rollups(seeded15, "telemetry_hourly"), rollups(seeded15, "telemetry_daily")
    keep = {RAW: 1, HOURLY: 400, DAILY: 0}

    async with await connect(seeded15) as conn:
        (raw_run, *_) = await retention.apply(conn, keep, NOW, target)
    assert [p.name for p in raw_run.held] == [f"telemetry_p202611{d}" for d in (30,)] + [
        f"telemetry_p2026120{d}" for d in range(1, 6)
    ]
    assert raw_run.dropped == []
    assert raw_points(seeded15) == before
    held = raw_run.held

    await archive_now(seeded15, store)
    async with await connect(seeded15) as conn:
        (raw_run, *_) = await retention.apply(conn, keep, NOW, target)
    assert [p.name for p in raw_run.dropped] == [p.name for p in held]
    left = raw_points(seeded15)
    assert left == [p for p in before if p[2] >= datetime(2026, 12, 6, tzinfo=UTC)]

    found = entries(store, FIRST, FIRST + timedelta(days=6))
    async with await connect(seeded15) as conn:
        imported = await import_hours(conn, store, found)
        assert len(imported) == 6 * 24
        assert sum(hour.added for hour in imported) == len(before) - len(left)
        again = await import_hours(conn, store, found)
    assert same_values(raw_points(seeded15), before)
    assert sum(hour.added for hour in again) == 0  # nothing twice
    # The rollups already counted the dropped points: unchanged.
    assert rollups(seeded15, "telemetry_hourly") == hourly
    assert rollups(seeded15, "telemetry_daily") == daily


@pytest.mark.parametrize("where", ["local", "s3"])
async def test_a_week_round_trips_into_a_new_instance_with_its_rollups(
    where: str, seeded15: str, pg15: PgServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if where == "local":
        store = open_store(str(tmp_path / "archive"))
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        store = open_store(f"s3://{bucket}/archive", s3_endpoint_url=server.endpoint_url)
    await archive_now(seeded15, store)
    assert verify(store, entries(store)).problems == []
    async with await connect(seeded15) as conn:
        assert (await archiving.due(conn, store.url, NOW)).files == 0  # written once
    fresh = pg15.url_for(pg15.create_database())
    try:
        await migrate(fresh)
        async with await connect(fresh) as conn:
            first = await import_hours(conn, store, entries(store))
            second = await import_hours(conn, store, entries(store))
        closed = NOW - timedelta(hours=1)
        assert same_values(raw_points(fresh), raw_points(seeded15, closed))
        assert sum(hour.added for hour in first) == len(raw_points(seeded15, closed))
        assert sum(hour.added for hour in second) == 0  # twice, no duplicates
        with psycopg.connect(seeded15) as conn:
            hourly = conn.execute(
                "SELECT * FROM telemetry_hourly WHERE hour < %s ORDER BY 1, 2, 3", (closed,)
            ).fetchall()
            daily = conn.execute(
                "SELECT * FROM telemetry_daily WHERE day < %s ORDER BY 1, 2, 3",
                (NOW.replace(hour=0),),
            ).fetchall()
        assert len(rollups(fresh, "telemetry_hourly")) == len(hourly)
        for got, want in zip(rollups(fresh, "telemetry_hourly"), hourly, strict=True):
            assert got[:4] == want[:4] and got[5:] == want[5:]
            assert got[4] == pytest.approx(want[4], rel=1e-12)  # a sum, added in another order
        fresh_daily = [r for r in rollups(fresh, "telemetry_daily") if r[2] < NOW.replace(hour=0)]
        assert [r[:4] for r in fresh_daily] == [r[:4] for r in daily]
        with psycopg.connect(fresh) as conn:
            latest = conn.execute("SELECT count(*) FROM telemetry_latest").fetchone()
        assert latest == (len(DEVICES) * len(METRICS),)
    finally:
        pg15.drop_database(fresh.rsplit("/", 1)[1])


async def test_verify_finds_a_damaged_file_and_a_missing_one(seeded15: str, tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "archive"))
    await archive_now(seeded15, store, FIRST + timedelta(hours=4))
    assert verify(store, entries(store)).problems == []

    damaged = tmp_path / "archive" / layout.points_key(FIRST + timedelta(hours=1))
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    gone = layout.points_key(FIRST + timedelta(hours=2))
    store.delete(gone)
    async with await connect(seeded15) as conn:
        recorded = await archive.archived(conn, store.url, archive.POINTS)
    problems = verify(store, entries(store), [f.key for f in recorded.values()]).problems
    reasons = {problem.key: problem.reason for problem in problems}
    assert reasons[layout.points_key(FIRST + timedelta(hours=1))].startswith("sha256 ")
    assert reasons[gone] in (
        "recorded as archived, missing from the archive",
        "its manifest is there, the file is missing",
    )
    assert len(reasons) == 2
