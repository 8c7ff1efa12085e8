"""Export as a viewer runs it: a week of 50 devices as CSV, every stored point once, the
sums the database holds; errors for what cannot be exported."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

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
    assert answer.text.startswith("time,device_id,metric,value\n")
    rows = rows_of(answer.text)
    assert len(rows) == 50 * 7 * 48 * 2

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


async def test_what_cannot_be_exported_is_refused_with_a_reason(api: Api) -> None:
    viewer = await api.user("viewer")
    cases = [
        ({}, 422, "name the devices to export"),
        ({"group": "nowhere"}, 404, "group 'nowhere' does not exist"),
        ({"device_id": "ghost"}, 404, "no such device: ghost"),
        ({"device_id": "ghost", "start": "2026-12-02", "end": "2026-12-01"}, 404, "ghost"),
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
