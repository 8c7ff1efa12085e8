"""The read-only role Grafana and psql use: the `reporting` views, with device names,
groups and units; nothing else, and no writes."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from fieldline.domain.readings import Reading
from fieldline.storage.migrate import migrate
from fieldline.storage.reporting import READER, ensure_reader
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.conftest import create_devices

NOW = datetime.now(UTC).replace(microsecond=0)


async def test_the_reader_sees_named_points_and_cannot_touch_the_tables(
    pg15_database_url: str,
) -> None:
    await migrate(pg15_database_url)
    async with await psycopg.AsyncConnection.connect(
        pg15_database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        await create_devices(conn, "gh-1")
        await conn.execute("INSERT INTO groups (name) VALUES ('north')")
        await conn.execute(
            "UPDATE devices SET name = 'Greenhouse 1', device_type = 'greenhouse',"
            " group_id = (SELECT id FROM groups WHERE name = 'north') WHERE device_id = 'gh-1'"
        )
        await conn.execute(
            "INSERT INTO metric_metadata (device_type, metric, display_name, unit, updated_by)"
            " VALUES ('*', 'temp', 'Temperature', '°F', 't'),"
            " ('greenhouse', 'temp', 'Air temperature', '°C', 't')"
        )
        reading = Reading(
            message_id="m1", time=NOW, metrics={"temp": 21.5, "rpm": 3.0}, attributes={}
        )
        batch = Batch(telemetry=[DeviceReadings("gh-1", NOW, [reading])])
        await write_batch(conn, batch, PartitionCache())  # type: ignore[arg-type]
        await ensure_reader(conn, "reader-password-1")
        await ensure_reader(conn, "reader-password-2")  # again: the password changes

    reader = make_conninfo(
        **{**conninfo_to_dict(pg15_database_url), "user": READER, "password": "reader-password-2"}
    )
    with psycopg.connect(reader) as conn:
        rows = conn.execute(
            "SELECT device_name, group_name, metric, metric_name, unit, value"
            " FROM reporting.points ORDER BY metric"
        ).fetchall()
        assert rows == [
            ("Greenhouse 1", "north", "rpm", "rpm", "", 3.0),
            ("Greenhouse 1", "north", "temp", "Air temperature", "°C", 21.5),  # its type's
        ]
        hourly = conn.execute("SELECT metric, count, avg FROM reporting.points_hourly").fetchall()
        assert sorted(hourly) == [("rpm", 1, 3.0), ("temp", 1, 21.5)]
        assert conn.execute("SELECT count(*) FROM reporting.latest").fetchone() == (2,)
    for statement in (
        "SELECT * FROM telemetry",
        "SELECT * FROM users",
        "INSERT INTO devices (device_id) VALUES ('x')",
        "DELETE FROM telemetry",
        "UPDATE devices SET name = 'x'",
    ):
        with psycopg.connect(reader) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(reader.replace("reader-password-2", "reader-password-1"))
