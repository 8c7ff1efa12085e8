"""The dashboard's reads: fleet summary, the devices table, status history, `/auth/me`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from fieldline.domain.readings import Reading
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.api.conftest import Api


async def create(api: Api, admin: dict[str, str], device_id: str, **extra: Any) -> None:
    created = await api.http.post(
        "/api/v1/devices", headers=admin, json={"device_id": device_id, **extra}
    )
    assert created.status_code == 201, created.text


async def sql(api: Api, statement: str, *params: Any) -> None:
    async with await psycopg.AsyncConnection.connect(api.url, autocommit=True) as conn:
        await conn.execute(statement, params)  # type: ignore[arg-type]


async def write(api: Api, device_id: str, metrics: dict[str, float], at: datetime) -> None:
    batch = Batch(telemetry=[DeviceReadings(device_id, at, [Reading(None, at, metrics, {})])])
    async with await psycopg.AsyncConnection.connect(api.url, autocommit=True) as conn:
        await write_batch(conn, batch, PartitionCache())


async def get(api: Api, headers: dict[str, str], path: str, **params: Any) -> Any:
    answer = await api.http.get(path, headers=headers, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_summary_counts_devices_by_what_an_operator_should_see(
    api: Api, admin: dict[str, str]
) -> None:
    for device_id in ("live", "silent", "new", "off"):
        await create(api, admin, device_id)
    now = datetime.now(UTC)
    await sql(
        api, "UPDATE devices SET status = 'online', last_seen = %s WHERE device_id = 'live'", now
    )
    # Said it was online, then nothing for longer than the online timeout.
    await sql(
        api,
        "UPDATE devices SET status = 'online', last_seen = %s WHERE device_id = 'silent'",
        now - timedelta(hours=2),
    )
    patched = await api.http.patch("/api/v1/devices/off", headers=admin, json={"enabled": False})
    assert patched.status_code == 200

    summary = await get(api, admin, "/api/v1/fleet/summary")

    assert summary["devices"] == {
        "total": 4,
        "online": 1,
        "offline": 1,
        "never_seen": 1,
        "disabled": 1,
    }


async def test_rates_count_stored_readings_and_rejected_messages(
    api: Api, admin: dict[str, str]
) -> None:
    await create(api, admin, "meter", group=None)
    now = datetime.now(UTC)
    await write(api, "meter", {"a": 1.0, "b": 2.0}, now)
    async with await psycopg.AsyncConnection.connect(api.url) as conn:
        counted = await (
            await conn.execute("SELECT sum(readings), sum(points) FROM ingest_activity")
        ).fetchone()
    assert counted == (1, 2)  # the batch just written: one reading of two metrics

    # Two complete 10-second buckets before the current one.
    await sql(
        api,
        "INSERT INTO ingest_activity (bucket, writer, readings, points)"
        " SELECT date_bin('10 seconds', now(), 'epoch') - b * interval '10 seconds', 1, 150, 300"
        " FROM generate_series(1, 2) AS b",
    )
    await sql(
        api,
        "INSERT INTO rejected_messages (received_at, device_id, topic, reason, payload)"
        " SELECT date_bin('10 seconds', now(), 'epoch') - interval '15 seconds', 'meter',"
        " 'devices/meter/telemetry', 'invalid_json', '\\x00'::bytea FROM generate_series(1, 6)",
    )

    ingest = (await get(api, admin, "/api/v1/fleet/summary"))["ingest"]

    assert ingest["window_seconds"] == 30
    assert ingest["readings_per_second"] == 300 / 30
    assert ingest["rejected_per_second"] == 6 / 30
    history = ingest["history"]
    assert len(history) >= 89  # 15 minutes of 10-second buckets, the filling one left out
    assert [b["readings"] for b in history[-2:]] == [150, 150]
    assert sum(b["rejected"] for b in history) == 6


async def test_the_devices_table_sorts_filters_and_pages_in_the_database(
    api: Api, admin: dict[str, str]
) -> None:
    for group in ("north", "south"):
        created = await api.http.post("/api/v1/groups", headers=admin, json={"name": group})
        assert created.status_code == 201
    now = datetime.now(UTC)
    for n in range(12):
        device_id = f"pump-{n:02d}"
        await create(
            api,
            admin,
            device_id,
            name=f"Pump {n} {'Harbour' if n % 4 == 0 else 'Field'}",
            device_type="pump" if n % 2 else "valve",
            group="north" if n < 6 else "south",
        )
        if n < 10:  # two never report
            await write(api, device_id, {"battery_voltage": 3.0 + n / 10, "rssi": -60.0 - n}, now)
    await sql(api, "UPDATE devices SET firmware_version = 'v2' WHERE device_id < 'pump-03'")
    await sql(
        api, "UPDATE devices SET status = 'online', last_seen = now() WHERE device_id < 'pump-05'"
    )

    table = await get(api, admin, "/api/v1/fleet/devices", sort="battery", order="desc", limit=5)
    assert table["total"] == 12
    assert [r["device_id"] for r in table["items"]] == [f"pump-{n:02d}" for n in (9, 8, 7, 6, 5)]
    assert table["items"][0]["battery"] == 3.9
    assert table["items"][0]["signal"] == -69.0

    last = await get(api, admin, "/api/v1/fleet/devices", sort="battery", order="desc", offset=10)
    assert [(r["device_id"], r["battery"]) for r in last["items"]] == [
        ("pump-11", None),
        ("pump-10", None),
    ]  # no value sorts last either way

    found = await get(api, admin, "/api/v1/fleet/devices", q="harbour")
    assert [r["device_id"] for r in found["items"]] == ["pump-00", "pump-04", "pump-08"]

    filtered = await get(
        api, admin, "/api/v1/fleet/devices", group="north", device_type="pump", status="online"
    )
    assert [r["device_id"] for r in filtered["items"]] == ["pump-01", "pump-03"]
    assert filtered["items"][0]["status"] == "online"
    assert filtered["items"][0]["group"] == "north"

    firmware = await get(api, admin, "/api/v1/fleet/devices", firmware_version="v2")
    assert firmware["total"] == 3

    never = await get(api, admin, "/api/v1/fleet/devices", status="never_seen", sort="last_seen")
    assert [r["device_id"] for r in never["items"]] == [f"pump-{n:02d}" for n in range(5, 12)]

    facets = (await get(api, admin, "/api/v1/fleet/summary"))["facets"]
    assert facets == {
        "groups": ["north", "south"],
        "device_types": ["pump", "valve"],
        "firmware_versions": ["v2"],
    }

    wildcard = await get(api, admin, "/api/v1/fleet/devices", q="%")
    assert wildcard["total"] == 0  # `%` is a character to find, not a pattern

    bad = await api.http.get("/api/v1/fleet/devices", headers=admin, params={"sort": "secret"})
    assert bad.status_code == 422
    assert "error" in bad.json()


async def test_viewers_read_the_overview_and_nobody_else_does(api: Api) -> None:
    viewer = await api.user("viewer")
    assert (await api.http.get("/api/v1/fleet/summary", headers=viewer)).status_code == 200
    assert (await api.http.get("/api/v1/fleet/devices", headers=viewer)).status_code == 200
    anonymous = await api.http.get("/api/v1/fleet/devices")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["message"]


async def test_status_history_pages_newest_first(api: Api, admin: dict[str, str]) -> None:
    await create(api, admin, "flaky")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for minute, status in enumerate(["online", "offline", "online", "offline", "online"]):
        await sql(
            api,
            "INSERT INTO device_status_events (device_id, time, status, detail)"
            " VALUES ('flaky', %s, %s, %s)",
            start + timedelta(minutes=minute),
            status,
            '{"reason": "timeout"}' if status == "offline" else "{}",
        )
    # Two events at the same moment are both listed, across a page boundary.
    await sql(
        api,
        "INSERT INTO device_status_events (device_id, time, status) VALUES ('flaky', %s, 'online')",
        start + timedelta(minutes=3),
    )

    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        page = await get(
            api,
            admin,
            "/api/v1/devices/flaky/status-history",
            limit=2,
            **({"cursor": cursor} if cursor else {}),
        )
        seen += [(e["time"][11:16], e["status"]) for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 6
    assert [time for time, _ in seen] == ["00:04", "00:03", "00:03", "00:02", "00:01", "00:00"]
    assert seen[0] == ("00:04", "online")

    first = await get(api, admin, "/api/v1/devices/flaky/status-history", limit=10)
    assert first["items"][4] == {
        "time": "2026-11-01T00:01:00Z",
        "status": "offline",
        "detail": {"reason": "timeout"},
    }

    missing = await api.http.get("/api/v1/devices/ghost/status-history", headers=admin)
    assert missing.status_code == 404


async def test_me_tells_the_dashboard_who_is_signed_in(api: Api, admin: dict[str, str]) -> None:
    me = await get(api, admin, "/api/v1/auth/me")
    assert (me["username"], me["role"]) == ("admin", "admin")
    viewer = await get(api, await api.user("viewer"), "/api/v1/auth/me")
    assert viewer["role"] == "viewer"
