"""The fleet view's latest values: exact as of each request, whatever wrote them.

`GET /api/v1/telemetry/latest` answers from the API's mirror (api/latest.py), kept
current by the writers' announcements; these tests write between requests with no
pause and expect every committed value in the very next answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from fieldline.api.latest import APPLICATION_NAME
from fieldline.domain.readings import Reading
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.api.conftest import Api

START = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


async def write(api: Api, values: dict[str, dict[str, float]], at: datetime) -> None:
    """One batch: each device's metrics at `at`, as ingest would commit it."""
    telemetry = [
        DeviceReadings(
            device_id, at, [Reading(None, at, {k: float(v) for k, v in metrics.items()}, {})]
        )
        for device_id, metrics in values.items()
    ]
    async with await psycopg.AsyncConnection.connect(api.url, autocommit=True) as conn:
        await write_batch(conn, Batch(telemetry=telemetry), PartitionCache())


async def fleet(api: Api, admin: dict[str, str], **params: Any) -> dict[str, Any]:
    answer = await api.http.get("/api/v1/telemetry/latest", headers=admin, params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def values(body: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {
        item["device_id"]: {name: m["value"] for name, m in item["metrics"].items()}
        for item in body["items"]
    }


async def create(api: Api, admin: dict[str, str], device_id: str, group: str | None = None) -> None:
    body = {"device_id": device_id} | ({"group": group} if group else {})
    created = await api.http.post("/api/v1/devices", headers=admin, json=body)
    assert created.status_code == 201, created.text


async def test_every_committed_value_is_in_the_next_answer(
    api: Api, admin: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    for device_id in ("a", "b", "c"):
        await create(api, admin, device_id)
    assert values(await fleet(api, admin)) == {"a": {}, "b": {}, "c": {}}
    for step in range(20):
        at = START + timedelta(seconds=step)
        await write(api, {"a": {"t": step}, "b": {"t": -step, "h": step / 2}}, at)
        assert values(await fleet(api, admin)) == {
            "a": {"t": step},
            "b": {"t": -step, "h": step / 2},
            "c": {},
        }
    # An older reading arriving late changes nothing; time is ISO 8601 with Z.
    await write(api, {"a": {"t": 1000.0}}, START)
    [a, *_] = (await fleet(api, admin))["items"]
    assert a["metrics"]["t"] == {"value": 19.0, "time": "2026-11-20T00:00:19Z"}
    # Answered by the mirror throughout, not by its fallback.
    assert not [r for r in caplog.records if r.name == "fieldline.api.latest"]


async def test_a_deleted_device_recreated_starts_empty(api: Api, admin: dict[str, str]) -> None:
    await create(api, admin, "gone")
    await write(api, {"gone": {"t": 1.0}}, START)
    assert values(await fleet(api, admin)) == {"gone": {"t": 1.0}}
    deleted = await api.http.delete("/api/v1/devices/gone", headers=admin)
    assert deleted.status_code == 204, deleted.text
    assert values(await fleet(api, admin)) == {}
    await create(api, admin, "gone")
    assert values(await fleet(api, admin)) == {"gone": {}}


async def test_a_batch_of_many_long_named_devices_is_announced_whole(
    api: Api, admin: dict[str, str]
) -> None:
    """Ids are announced in several NOTIFY payloads (each under 8,000 bytes)."""
    ids = [f"device-{n:04d}-" + "x" * 110 for n in range(300)]  # about 37 KB of ids
    async with api.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO devices (device_id) SELECT unnest(%s::text[])",
            (ids,),
        )
    assert len((await fleet(api, admin, limit=1000))["items"]) == 300
    await write(api, {device_id: {"v": n} for n, device_id in enumerate(ids)}, START)
    assert values(await fleet(api, admin, limit=1000)) == {
        device_id: {"v": n} for n, device_id in enumerate(ids)
    }


async def test_pages_and_groups(api: Api, admin: dict[str, str]) -> None:
    await api.http.post("/api/v1/groups", headers=admin, json={"name": "north"})
    for n in range(5):
        await create(api, admin, f"n{n}", group="north")
        await create(api, admin, f"s{n}")
    await write(api, {f"n{n}": {"v": n} for n in range(5)} | {"s0": {"v": 9}}, START)
    first = await fleet(api, admin, group="north", limit=3)
    assert values(first) == {"n0": {"v": 0}, "n1": {"v": 1}, "n2": {"v": 2}}
    rest = await fleet(api, admin, group="north", limit=3, cursor=first["next_cursor"])
    assert values(rest) == {"n3": {"v": 3}, "n4": {"v": 4}}
    assert rest["next_cursor"] is None
    assert values(await fleet(api, admin, group="nowhere")) == {}


async def test_answers_survive_the_mirror_losing_its_connection(
    api: Api, admin: dict[str, str]
) -> None:
    await create(api, admin, "k")
    await write(api, {"k": {"v": 1.0}}, START)
    assert values(await fleet(api, admin)) == {"k": {"v": 1.0}}
    async with api.pool.connection() as conn:
        killed = await (
            await conn.execute(
                "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = %s",
                (APPLICATION_NAME,),
            )
        ).fetchone()
    assert killed is not None and killed["n"] == 1
    # Written while the mirror is blind: the answer must still have it.
    await write(api, {"k": {"v": 2.0}}, START + timedelta(seconds=1))
    assert values(await fleet(api, admin)) == {"k": {"v": 2.0}}
    await write(api, {"k": {"v": 3.0}}, START + timedelta(seconds=2))
    assert values(await fleet(api, admin)) == {"k": {"v": 3.0}}
