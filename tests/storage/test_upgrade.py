"""Upgrades that skip versions: an instance at any earlier migration, with data in it,
upgrades to the newest in one step and keeps its devices, points and rollups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row

from fieldline.domain.readings import Reading
from fieldline.storage.migrate import available_migrations, migrate
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.conftest import PgServer

MIGRATIONS = available_migrations()
HOURLY = 9  # 0009_telemetry_hourly: ingest keeps hourly rollups from then on
TIERED = 17  # 0017_rollup_tiers: rollups partitioned, and daily ones kept by ingest too
T0 = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)  # six hours across a month's end

BY_HOUR = (
    "SELECT device_id, metric, date_bin('1 hour', time, TIMESTAMPTZ '1970-01-01 00:00:00+00'),"
    " count(*), sum(value), min(value), max(value) FROM telemetry GROUP BY 1, 2, 3 ORDER BY 3"
)
BY_DAY = BY_HOUR.replace("'1 hour'", "'1 day'")


async def at_version(conn: psycopg.AsyncConnection[object], version: int) -> None:
    """The schema as the release that ended at `version` left it."""
    await conn.execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for migration in MIGRATIONS:
        if migration.version <= version:
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )


async def rows(conn: psycopg.AsyncConnection[object], sql: str) -> list[tuple[object, ...]]:
    cursor = conn.cursor()
    await cursor.execute(sql.encode())
    return list(await cursor.fetchall())


@pytest.mark.parametrize("version", [m.version for m in MIGRATIONS[:-1]])
async def test_an_instance_at_an_earlier_version_upgrades_in_one_step_and_keeps_its_data(
    pg15: PgServer, version: int
) -> None:
    database = pg15.create_database()
    url = pg15.url_for(database)
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await at_version(conn, version)
            # Its data, written as that release wrote it.
            await conn.execute("INSERT INTO devices (device_id) VALUES ('gh-1')")
            for day in ("2026-11-30", "2026-12-01"):
                end = (datetime.fromisoformat(day) + timedelta(days=1)).date().isoformat()
                await conn.execute(
                    f"CREATE TABLE telemetry_p{day.replace('-', '')} PARTITION OF telemetry"
                    f" FOR VALUES FROM ('{day} 00:00:00+00') TO ('{end} 00:00:00+00')".encode()
                )
            await conn.execute(
                "INSERT INTO telemetry (time, device_id, metric, value)"
                " SELECT %s + n * interval '7 minutes', 'gh-1', 'temperature', 18 + n %% 9"
                " FROM generate_series(0, 51) AS n",
                (T0,),
            )
            if version >= TIERED:  # partitions as ingest made them, and daily rollups
                for table, name, start, end in (
                    ("telemetry_hourly", "p202611", "2026-11-01", "2026-12-01"),
                    ("telemetry_hourly", "p202612", "2026-12-01", "2027-01-01"),
                    ("telemetry_daily", "p2026", "2026-01-01", "2027-01-01"),
                ):
                    await conn.execute(
                        f"CREATE TABLE {table}_{name} PARTITION OF {table} FOR VALUES"
                        f" FROM ('{start} 00:00:00+00') TO ('{end} 00:00:00+00')".encode()
                    )
                await conn.execute(
                    "INSERT INTO telemetry_daily (device_id, metric, day, count, sum, min, max) "
                    + BY_DAY.replace(" ORDER BY 3", "")
                )
            if version >= HOURLY:
                await conn.execute(
                    "INSERT INTO telemetry_hourly (device_id, metric, hour, count, sum, min, max) "
                    + BY_HOUR.replace(" ORDER BY 3", "")
                )

        applied = await migrate(url)

        assert [m.version for m in applied] == [
            m.version for m in MIGRATIONS if m.version > version
        ]
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            assert await rows(conn, "SELECT device_id FROM devices") == [("gh-1",)]
            assert await rows(conn, "SELECT count(*) FROM telemetry") == [(52,)]
            hourly = "SELECT device_id, metric, hour, count, sum, min, max FROM telemetry_hourly"
            daily = "SELECT device_id, metric, day, count, sum, min, max FROM telemetry_daily"
            assert await rows(conn, hourly + " ORDER BY hour") == await rows(conn, BY_HOUR)
            assert await rows(conn, daily + " ORDER BY day") == await rows(conn, BY_DAY)
            assert len(await rows(conn, BY_HOUR)) == 6 and len(await rows(conn, BY_DAY)) == 2
            tiers = await rows(
                conn,
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent IN ('telemetry_hourly'::regclass,"
                " 'telemetry_daily'::regclass) ORDER BY 1",
            )
            assert tiers == [
                ("telemetry_daily_p2026",),
                ("telemetry_hourly_p202611",),
                ("telemetry_hourly_p202612",),
            ]

        # Ingest goes on adding to every tier.
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as conn:
            late = Reading(
                message_id="late",
                time=T0 + timedelta(hours=4),
                metrics={"temperature": 40.0},
                attributes={},
            )
            batch = Batch(telemetry=[DeviceReadings("gh-1", T0, [late])])
            assert (await write_batch(conn, batch, PartitionCache())).readings_stored == 1
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            assert await rows(conn, daily + " ORDER BY day") == await rows(conn, BY_DAY)
            assert await rows(conn, "SELECT max FROM telemetry_daily ORDER BY day") == [
                (26.0,),
                (40.0,),
            ]
    finally:
        pg15.drop_database(database)
