"""The preview of a draft rule over stored history, through the API on real PostgreSQL:
the intervals a rule would have fired over, per device, from the evaluator's own
state machine (durations, hysteresis, per-device thresholds) and no_data gaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from fieldline.alerts import preview
from fieldline.domain.readings import Reading
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.api.conftest import Api
from tests.api.conftest import admin as admin  # noqa: PLC0414  (the fixtures, shared)
from tests.api.conftest import api as api  # noqa: PLC0414
from tests.api.test_auth_and_roles import assert_error

PREVIEW = "/api/v1/alert-rules/preview"
T = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
RANGE = {"start": T.isoformat(), "end": (T + timedelta(hours=3)).isoformat()}
WARM = {
    "type": "threshold",
    "metric": "temperature",
    "op": ">",
    "value": 8,
    "for_seconds": 600,
    "clear_value": 7,
    "clear_for_seconds": 120,
}


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


def iso(minutes: float) -> str:
    return at(minutes).isoformat().replace("+00:00", "Z")


# One reading a minute: a short warm spell (5 min < for_seconds), a long one that fires
# at minute 30, a dip to 7.5 inside the hysteresis band (still firing), and a cool
# spell that clears after clear_for_seconds, at minute 53.
WARM_ROOM = (
    [(m, 5.0) for m in range(10)]
    + [(m, 9.0) for m in range(10, 15)]
    + [(m, 5.0) for m in range(15, 20)]
    + [(m, 9.0) for m in range(20, 41)]
    + [(m, 7.5) for m in range(41, 51)]
    + [(m, 6.0) for m in range(51, 61)]
    + [(m, 5.0) for m in range(61, 120)]
)


async def add_device(api: Api, headers: dict[str, str], device_id: str, **fields: Any) -> None:
    created = await api.http.post(
        "/api/v1/devices", headers=headers, json={"device_id": device_id, **fields}
    )
    assert created.status_code == 201, created.text


async def store(api: Api, device_id: str, metric: str, points: list[tuple[float, float]]) -> None:
    readings = [Reading(f"{metric}{m}", at(m), {metric: v}, {}) for m, v in points]
    async with await psycopg.AsyncConnection.connect(api.url, autocommit=True) as conn:
        await write_batch(
            conn, Batch(telemetry=[DeviceReadings(device_id, T, readings)]), PartitionCache()
        )


def intervals(answer: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        d["device_id"]: [
            (i["start"], i["end"], i["start_value"], i["end_value"]) for i in d["intervals"]
        ]
        for d in answer["devices"]
    }


async def test_threshold_with_duration_hysteresis_and_metadata_thresholds(
    api: Api, admin: dict[str, str]
) -> None:
    await api.http.post("/api/v1/groups", headers=admin, json={"name": "cold rooms"})
    rooms = {"plain": {}, "lower": {"max_temp": 8.5}, "higher": {"max_temp": 10}}
    for device_id, metadata in rooms.items():
        await add_device(api, admin, device_id, group="cold rooms", metadata=metadata)
        await store(api, device_id, "temperature", WARM_ROOM)
    await add_device(api, admin, "elsewhere")  # not in the group
    await store(api, "elsewhere", "temperature", WARM_ROOM)
    viewer = await api.user("viewer")

    draft = WARM | {"value": {"metadata": "max_temp", "default": 8}}
    answer = await api.http.post(
        PREVIEW,
        headers=viewer,
        json={"scope": {"group": "cold rooms"}, "condition": draft} | RANGE,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["start"], body["end"]) == (iso(0), iso(180))
    assert body["points"] == 3 * len(WARM_ROOM) and body["truncated"] is False
    fired = [(iso(30), iso(53), 9.0, 6.0)]
    assert intervals(body) == {"higher": [], "lower": fired, "plain": fired}

    # Up to minute 45 the alert is still firing: the dip is inside the hysteresis band.
    until = await api.http.post(
        PREVIEW,
        headers=viewer,
        json={"condition": WARM, "device_id": "plain", "start": iso(0), "end": iso(45)},
    )
    assert intervals(until.json()) == {"plain": [(iso(30), None, 9.0, None)]}

    # Without hysteresis the dip to 7.5 clears it, and the second warm spell is too short.
    flappy = WARM | {"clear_value": None, "clear_for_seconds": 0}
    plain = await api.http.post(
        PREVIEW, headers=viewer, json={"condition": flappy, "device_id": "plain"} | RANGE
    )
    assert intervals(plain.json()) == {"plain": [(iso(30), iso(41), 9.0, 7.5)]}


async def test_a_duration_completes_on_the_last_value_without_a_new_reading(
    api: Api, admin: dict[str, str]
) -> None:
    """A device that reports every 15 minutes and stays warm fires at 10, as the
    evaluator's timers make it: the last value stands until the next one comes."""
    await add_device(api, admin, "sparse")
    await store(api, "sparse", "temperature", [(0, 5.0), (15, 9.0), (30, 9.0), (45, 5.0)])
    answer = await api.http.post(
        PREVIEW, headers=admin, json={"condition": WARM | {"clear_value": None}} | RANGE
    )
    # Cool again at 45, and still (no newer reading) after clear_for_seconds: clear at 47.
    assert intervals(answer.json()) == {"sparse": [(iso(25), iso(47), 9.0, 5.0)]}
    pending = await api.http.post(
        PREVIEW,
        headers=admin,
        json={"condition": WARM, "start": iso(0), "end": iso(20)},  # 5 of 10 minutes
    )
    assert intervals(pending.json()) == {"sparse": []}
    fired = await api.http.post(
        PREVIEW, headers=admin, json={"condition": WARM, "start": iso(10), "end": iso(28)}
    )
    assert intervals(fired.json()) == {"sparse": [(iso(25), None, 9.0, None)]}


async def test_no_data_gaps(api: Api, admin: dict[str, str]) -> None:
    await add_device(api, admin, "humid")
    minutes = [-60.0, *range(0, 30), *range(60, 91)]
    await store(api, "humid", "humidity", [(m, 50.0) for m in minutes])
    await store(api, "humid", "temperature", [(m, 5.0) for m in range(0, 180)])
    condition = {"type": "no_data", "metric": "humidity", "for_seconds": 600}
    answer = await api.http.post(PREVIEW, headers=admin, json={"condition": condition} | RANGE)
    assert answer.status_code == 200, answer.text
    # Silent since minute -60: already missing at the start, back at minute 0 (no interval
    # of no length); then missing from 29 + 10 until 60, and from 90 + 10 on.
    assert intervals(answer.json()) == {
        "humid": [(iso(39), iso(60), None, 50.0), (iso(100), None, None, None)]
    }
    assert answer.json()["points"] == 30 + 31

    late = await api.http.post(
        PREVIEW,
        headers=admin,
        json={"condition": condition, "start": iso(45), "end": iso(58)},
    )  # silent since 29: missing from the start of the range
    assert intervals(late.json()) == {"humid": [(iso(45), None, None, None)]}


async def test_a_metric_never_received_is_missed_from_the_devices_creation(
    api: Api, admin: dict[str, str]
) -> None:
    await add_device(api, admin, "new")
    now = datetime.now(UTC)
    condition = {"type": "no_data", "metric": "co2", "for_seconds": 600}
    answer = await api.http.post(PREVIEW, headers=admin, json={"condition": condition})
    body = answer.json()
    end = datetime.fromisoformat(body["end"])
    assert end - datetime.fromisoformat(body["start"]) == timedelta(hours=24)
    assert abs(end - now) < timedelta(minutes=1)
    assert intervals(body) == {"new": []}  # created just now: not missing for 10 minutes yet


async def test_bounds_truncate(
    api: Api, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for device_id in ("a", "b", "c"):
        await add_device(api, admin, device_id)
        await store(api, device_id, "temperature", WARM_ROOM)
    monkeypatch.setattr(preview, "MAX_DEVICES", 2)
    two = await api.http.post(PREVIEW, headers=admin, json={"condition": WARM} | RANGE)
    assert two.json()["truncated"] is True
    assert [d["device_id"] for d in two.json()["devices"]] == ["a", "b"]
    monkeypatch.setattr(preview, "MAX_POINTS", len(WARM_ROOM) + 35)  # b stops at minute 34
    cut = await api.http.post(PREVIEW, headers=admin, json={"condition": WARM} | RANGE)
    assert cut.json()["truncated"] is True and cut.json()["points"] == len(WARM_ROOM) + 35
    assert intervals(cut.json()) == {
        "a": [(iso(30), iso(53), 9.0, 6.0)],
        "b": [(iso(30), None, 9.0, None)],
    }


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            {"condition": {"type": "offline", "for_seconds": 60}},
            "preview supports threshold and no_data",
        ),
        ({"condition": WARM | {"op": "~"}}, "condition.op"),
        ({"condition": WARM, "scope": {"site": "x"}}, "scope: unknown field"),
        ({"condition": WARM, "start": iso(60), "end": iso(0)}, "end: must be after start"),
        ({"condition": WARM, "start": iso(0), "end": iso(31 * 1440 + 1)}, "at most 31 days"),
        ({"condition": WARM, "start": "yesterday"}, "start"),
        ({}, "condition"),
    ],
)
async def test_bad_previews_are_refused(
    api: Api, admin: dict[str, str], body: dict[str, Any], says: str
) -> None:
    refused = await api.http.post(PREVIEW, headers=admin, json=body)
    assert refused.status_code == 422, refused.text
    assert says in refused.json()["error"]["message"], refused.text


async def test_a_device_outside_the_scope_gives_nothing(api: Api, admin: dict[str, str]) -> None:
    await add_device(api, admin, "a", device_type="fridge")
    await store(api, "a", "temperature", WARM_ROOM)
    for scope, device_id, found in [
        ({"device_type": "fridge"}, "a", ["a"]),
        ({"device_type": "oven"}, "a", []),
        ({"device_id": "a"}, None, ["a"]),
        ({}, "missing", []),
    ]:
        answer = await api.http.post(
            PREVIEW,
            headers=admin,
            json={"condition": WARM, "scope": scope, "device_id": device_id} | RANGE,
        )
        assert [d["device_id"] for d in answer.json()["devices"]] == found
    assert_error(await api.http.post(PREVIEW, json={"condition": WARM}), 401, "unauthorized")
