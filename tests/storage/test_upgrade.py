"""An instance upgraded across the rollup tiers' migration keeps what it had and goes on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from fieldline.domain.readings import Reading
from fieldline.storage.migrate import available_migrations, migrate
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch

TIERS = 17  # 0017_rollup_tiers: hourly rollups partitioned, daily rollups added
T0 = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)  # six hours across a month's end


async def test_hourly_rollups_survive_the_tiers_migration_and_daily_ones_are_summed_from_them(
    pg15_database_url: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(pg15_database_url, autocommit=True) as conn:
        # The schema as the release before the tiers left it, with its data.
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in available_migrations():
            if migration.version < TIERS:
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
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
        await conn.execute(
            "INSERT INTO telemetry_hourly (device_id, metric, hour, count, sum, min, max)"
            " SELECT device_id, metric,"
            " date_bin('1 hour', time, TIMESTAMPTZ '1970-01-01 00:00:00+00'),"
            " count(*), sum(value), min(value), max(value) FROM telemetry GROUP BY 1, 2, 3"
        )
        hours_before = await (
            await conn.execute("SELECT * FROM telemetry_hourly ORDER BY hour")
        ).fetchall()

    applied = await migrate(pg15_database_url)

    assert TIERS in [m.version for m in applied]
    async with await psycopg.AsyncConnection.connect(pg15_database_url, autocommit=True) as conn:
        hours = await (
            await conn.execute("SELECT * FROM telemetry_hourly ORDER BY hour")
        ).fetchall()
        assert hours == hours_before
        assert len(hours) == 6
        partitions = await (
            await conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent IN ('telemetry_hourly'::regclass,"
                " 'telemetry_daily'::regclass) ORDER BY 1"
            )
        ).fetchall()
        assert [row[0] for row in partitions] == [
            "telemetry_daily_p2026",
            "telemetry_hourly_p202611",
            "telemetry_hourly_p202612",
        ]
        days_from_points = (
            "SELECT device_id, metric,"
            " date_bin('1 day', time, TIMESTAMPTZ '1970-01-01 00:00:00+00'),"
            " count(*), sum(value), min(value), max(value) FROM telemetry"
            " GROUP BY 1, 2, 3 ORDER BY 3"
        )
        days_stored = "SELECT * FROM telemetry_daily ORDER BY day"
        assert (
            await (await conn.execute(days_stored)).fetchall()
            == await (await conn.execute(days_from_points)).fetchall()
        )

        # Ingest goes on adding to both tiers, in the new month too.
        late = Reading(
            message_id="late",
            time=T0 + timedelta(hours=4),
            metrics={"temperature": 40.0},
            attributes={},
        )
        batch = Batch(telemetry=[DeviceReadings("gh-1", T0, [late])])
        await write_batch(conn, batch, PartitionCache())
        assert (
            await (await conn.execute(days_stored)).fetchall()
            == await (await conn.execute(days_from_points)).fetchall()
        )
        (newest,) = await (
            await conn.execute("SELECT max FROM telemetry_daily WHERE day = '2026-12-01'")
        ).fetchall()
        assert newest == (40.0,)
