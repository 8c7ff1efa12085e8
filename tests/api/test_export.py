"""Export as a viewer runs it: a week of 50 devices as CSV and as Parquet, every stored
point once with its unit, the sums the database holds; errors for what cannot be exported."""

from __future__ import annotations

import csv
import io
import math
import struct
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fieldline.domain.readings import Reading
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.api.conftest import Api
from tests.conftest import create_devices

END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START = END - timedelta(days=7)
DEVICES = [f"greenhouse-{n:02d}" for n in range(50)]


async def seed(api: Api) -> None:
    async with api.pool.connection() as conn:
        await create_devices(conn, *DEVICES, "elsewhere")
        await conn.execute("INSERT INTO groups (name) VALUES ('north')")
        # Units: the first five devices are of a type with its own; the rest use `*`'s.
        await conn.execute(
            "UPDATE devices SET device_type = 'fahrenheit' WHERE device_id = ANY(%s)",
            (DEVICES[:5],),
        )
        await conn.execute(
            "INSERT INTO metric_metadata (device_type, metric, display_name, unit, updated_by)"
            " VALUES ('*', 'temperature', 'Temperature', '°C', 't'),"
            " ('fahrenheit', 'temperature', 'Temperature', '°F', 't')"
        )
        await conn.execute(
            "UPDATE devices SET group_id = (SELECT id FROM groups WHERE name = 'north')"
            " WHERE device_id = ANY(%s)",
            (DEVICES[:10],),
        )
        for n, device in enumerate(DEVICES):
            readings = [
                Reading(
                    message_id=f"{device}-{i}",
                    # Microseconds, and a minute's offset per device: times must survive.
                    time=START + timedelta(minutes=30 * i + n % 30, microseconds=250 * n),
                    metrics={"temperature": 20 + (i % 40) / 8 - n / 3, "humidity": 0.1 * i},
                    attributes={},
                )
                for i in range(7 * 48)  # a week, every half hour
            ]
            batch = Batch(telemetry=[DeviceReadings(device, END, readings)])
            await write_batch(conn, batch, PartitionCache())  # type: ignore[arg-type]


def rows_of(body: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body)))


@pytest.mark.timeout(120)
async def test_a_week_of_fifty_devices_exports_every_point_once(api: Api) -> None:
    await seed(api)
    viewer = await api.user("viewer")
    params = [("device_id", d) for d in DEVICES] + [
        ("start", START.isoformat()),
        ("end", END.isoformat()),
    ]
    answer = await api.http.get("/api/v1/export", params=params, headers=viewer)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    assert answer.text.startswith("time,device_id,metric,value,unit\n")
    rows = rows_of(answer.text)
    assert len(rows) == 50 * 7 * 48 * 2
    units = {(r["device_id"], r["metric"], r["unit"]) for r in rows}
    assert units == {
        *((d, "temperature", "°F" if n < 5 else "°C") for n, d in enumerate(DEVICES)),
        *((d, "humidity", "") for d in DEVICES),  # no metadata: no unit
    }

    # The same points and sums as the database, times to the microsecond.
    async with api.pool.connection() as conn:
        stored = await (
            await conn.execute(
                "SELECT device_id, metric, count(*) AS n, sum(value) AS total, max(time) AS last"
                " FROM telemetry GROUP BY 1, 2"
            )
        ).fetchall()
    counts: Counter[tuple[str, str]] = Counter()
    sums: defaultdict[tuple[str, str], float] = defaultdict(float)
    last: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (row["device_id"], row["metric"])
        counts[key] += 1
        sums[key] += float(row["value"])
        last[key] = row["time"]
    assert {(r["device_id"], r["metric"]): r["n"] for r in stored if r["device_id"] in DEVICES} == (
        counts
    )
    for r in stored:
        key = (r["device_id"], r["metric"])
        if r["device_id"] in DEVICES:
            assert math.isclose(sums[key], r["total"], rel_tol=1e-12)
            assert datetime.fromisoformat(last[key]) == r["last"]  # ordered by time, exact
    assert rows[0]["time"].endswith("Z") and rows[0]["device_id"] == "greenhouse-00"

    # A group, one metric, a day.
    one = await api.http.get(
        "/api/v1/export",
        params={
            "group": "north",
            "metric": "humidity",
            "start": (END - timedelta(days=1)).isoformat(),
            "end": END.isoformat(),
        },
        headers=viewer,
    )
    assert one.status_code == 200, one.text
    group_rows = rows_of(one.text)
    assert {r["device_id"] for r in group_rows} == set(DEVICES[:10])
    assert {r["metric"] for r in group_rows} == {"humidity"}
    assert len(group_rows) == 10 * 48


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


@pytest.mark.timeout(120)
async def test_parquet_holds_the_same_points_typed_and_bit_for_bit(api: Api) -> None:
    await seed(api)
    # Values whose text forms are treacherous: they must come back as the same doubles.
    edge = [0.1, 1 / 3, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e21]
    async with api.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO telemetry (time, device_id, metric, value)"
            " SELECT %s::timestamptz + n * interval '1 s', 'elsewhere', 'edge', v"
            " FROM unnest(%s::float8[]) WITH ORDINALITY AS e(v, n)",
            (START, edge),
        )
    viewer = await api.user("viewer")
    params = [("device_id", d) for d in [*DEVICES, "elsewhere"]] + [
        ("start", START.isoformat()),
        ("end", END.isoformat()),
        ("format", "parquet"),
    ]
    answer = await api.http.get("/api/v1/export", params=params, headers=viewer)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/vnd.apache.parquet"
    assert answer.headers["content-disposition"].endswith('.parquet"')

    file = pq.ParquetFile(io.BytesIO(answer.content))
    assert file.schema_arrow == pa.schema(
        [
            ("time", pa.timestamp("us", tz="UTC")),
            ("device_id", pa.string()),
            ("metric", pa.string()),
            ("value", pa.float64()),
            ("unit", pa.string()),
        ]
    )
    assert file.metadata.row_group(0).column(3).compression == "ZSTD"
    table = file.read()
    assert table.num_rows == 50 * 7 * 48 * 2 + len(edge)
    async with api.pool.connection() as conn:
        stored = await (
            await conn.execute(
                "SELECT time, device_id, metric, value FROM telemetry"
                " ORDER BY device_id, metric, time"
            )
        ).fetchall()
    exported = table.to_pylist()
    assert [(r["time"], r["device_id"], r["metric"]) for r in exported] == [
        (r["time"], r["device_id"], r["metric"]) for r in stored
    ]
    assert [bits(r["value"]) for r in exported] == [bits(r["value"]) for r in stored]
    assert {(r["device_id"], r["metric"], r["unit"]) for r in exported if r["unit"]} == {
        (d, "temperature", "°F" if n < 5 else "°C") for n, d in enumerate(DEVICES)
    }

    # The CSV of the same range: the same rows, row for row.
    as_csv = await api.http.get("/api/v1/export", params=params[:-1], headers=viewer)
    csv_rows = rows_of(as_csv.text)
    assert [
        (
            datetime.fromisoformat(r["time"]),
            r["device_id"],
            r["metric"],
            float(r["value"]),
            r["unit"],
        )
        for r in csv_rows
    ] == [(r["time"], r["device_id"], r["metric"], r["value"], r["unit"]) for r in exported]

    # Nothing in the range: a valid file without rows.
    empty = await api.http.get(
        "/api/v1/export",
        params={"device_id": "elsewhere", "format": "parquet", "start": "2001-01-01",
                "end": "2001-01-02"},
        headers=viewer,
    )  # fmt: skip
    assert empty.status_code == 200
    assert pq.read_table(io.BytesIO(empty.content)).num_rows == 0


async def test_what_cannot_be_exported_is_refused_with_a_reason(api: Api) -> None:
    viewer = await api.user("viewer")
    cases = [
        ({}, 422, "name the devices to export"),
        ({"group": "nowhere"}, 404, "group 'nowhere' does not exist"),
        ({"device_id": "ghost"}, 404, "no such device: ghost"),
        ({"device_id": "ghost", "start": "2026-12-02", "end": "2026-12-01"}, 404, "ghost"),
        ({"device_id": "ghost", "format": "xlsx"}, 422, "csv"),
    ]
    for params, status, message in cases:
        answer = await api.http.get("/api/v1/export", params=params, headers=viewer)
        assert answer.status_code == status, answer.text
        assert message in answer.json()["error"]["message"]
    async with api.pool.connection() as conn:
        await create_devices(conn, "real")
    backwards = await api.http.get(
        "/api/v1/export",
        params={"device_id": "real", "start": "2026-12-02T00:00:00Z", "end": "2026-12-01"},
        headers=viewer,
    )
    assert backwards.status_code == 422 and "start must be before end" in backwards.text
    assert (await api.http.get("/api/v1/export", params={"device_id": "real"})).status_code == 401
