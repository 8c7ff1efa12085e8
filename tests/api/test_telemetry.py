from __future__ import annotations

import base64
import random
import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from fieldline.domain.readings import Reading
from fieldline.storage.writer import (
    Batch,
    DeviceReadings,
    PartitionCache,
    RejectedMessage,
    write_batch,
)
from tests.api.conftest import Api
from tests.api.test_auth_and_roles import assert_error

START = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


async def store(api: Api, device_id: str, points: list[tuple[datetime, float]]) -> None:
    readings = [Reading(f"m{i}", t, {"temperature": v}, {}) for i, (t, v) in enumerate(points)]
    async with await psycopg.AsyncConnection.connect(api.url, autocommit=True) as conn:
        await write_batch(
            conn, Batch(telemetry=[DeviceReadings(device_id, START, readings)]), PartitionCache()
        )


@pytest.fixture
async def history(api: Api, admin: dict[str, str]) -> list[tuple[datetime, float]]:
    """Three days of irregular readings from one device."""
    await api.http.post("/api/v1/devices", headers=admin, json={"device_id": "probe"})
    rng = random.Random(7)
    points, t = [], START
    while t < START + timedelta(days=3):
        points.append((t, round(rng.uniform(-5, 30), 3)))
        t += timedelta(seconds=rng.randint(20, 400))
    await store(api, "probe", points)
    return points


def expected_buckets(
    points: list[tuple[datetime, float]], start: datetime, end: datetime, width: timedelta, agg: str
) -> list[tuple[datetime, float]]:
    groups: dict[datetime, list[float]] = defaultdict(list)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for t, v in points:
        if start <= t < end:
            groups[epoch + ((t - epoch) // width) * width].append(v)
    combine = {"avg": statistics.fmean, "min": min, "max": max, "count": len, "sum": sum}[agg]
    return [(k, float(combine(vs))) for k, vs in sorted(groups.items())]


@pytest.mark.parametrize("agg", ["avg", "min", "max", "count", "sum"])
@pytest.mark.parametrize("bucket", ["5m", "1h", "1d"])
@pytest.mark.parametrize(
    "span",
    [
        (timedelta(hours=7, minutes=13), timedelta(days=2, hours=5)),
        # Both ends inside an hour: hourly rollups inside, raw points at the edges.
        (timedelta(hours=1, minutes=59), timedelta(days=2, hours=5, minutes=47)),
        # Within one hour: raw points only.
        (timedelta(hours=3, minutes=10), timedelta(hours=3, minutes=50)),
    ],
)
async def test_buckets_equal_aggregates_of_raw_points(
    api: Api,
    admin: dict[str, str],
    history: list[tuple[datetime, float]],
    agg: str,
    bucket: str,
    span: tuple[timedelta, timedelta],
) -> None:
    start, end = START + span[0], START + span[1]
    answer = await api.http.get(
        "/api/v1/devices/probe/telemetry",
        headers=admin,
        params={
            "metric": "temperature",
            "start": start.isoformat(),
            "end": str(end.timestamp()),
            "bucket": bucket,
            "agg": agg,
        },
    )
    assert answer.status_code == 200, answer.text
    got = [(datetime.fromisoformat(p["time"]), p["value"]) for p in answer.json()["points"]]
    width = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
    want = expected_buckets(history, start, end, width[bucket], agg)
    assert [t for t, _ in got] == [t for t, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-9)


async def test_raw_points_page_through_the_range(
    api: Api, admin: dict[str, str], history: list[tuple[datetime, float]]
) -> None:
    start, end = START + timedelta(hours=1), START + timedelta(hours=20)
    got: list[tuple[datetime, float]] = []
    cursor = None
    while True:
        params = {
            "metric": "temperature",
            "start": start.isoformat(),
            "end": end.isoformat(),
            "limit": 50,
            **({"cursor": cursor} if cursor else {}),
        }
        page = (
            await api.http.get("/api/v1/devices/probe/telemetry", headers=admin, params=params)
        ).json()
        got += [(datetime.fromisoformat(p["time"]), p["value"]) for p in page["points"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert got == [(t, v) for t, v in history if start <= t < end]


async def test_query_validation(
    api: Api, admin: dict[str, str], history: list[tuple[datetime, float]]
) -> None:
    url = "/api/v1/devices/probe/telemetry"
    assert_error(await api.http.get(url, headers=admin), 422, "validation_error")
    for params in (
        {"bucket": "5 parsecs"},
        {"bucket": "0m"},
        {"agg": "avg"},
        {"start": "yesterday"},
        {"agg": "median", "bucket": "1h"},
        {"start": "2026-11-21T00:00:00Z", "end": "2026-11-20T00:00:00Z"},
        {"bucket": "1s", "start": "2020-01-01T00:00:00Z"},
    ):
        answer = await api.http.get(url, headers=admin, params={"metric": "temperature", **params})
        assert_error(answer, 422, "validation_error")
    assert_error(
        await api.http.get(
            "/api/v1/devices/ghost/telemetry", headers=admin, params={"metric": "t"}
        ),
        404,
        "not_found",
    )


async def test_latest_values_one_and_many(
    api: Api, admin: dict[str, str], history: list[tuple[datetime, float]]
) -> None:
    await api.http.post("/api/v1/devices", headers=admin, json={"device_id": "quiet"})
    latest = (await api.http.get("/api/v1/devices/probe/telemetry/latest", headers=admin)).json()
    last_time, last_value = history[-1]
    assert latest["metrics"]["temperature"]["value"] == last_value
    assert datetime.fromisoformat(latest["metrics"]["temperature"]["time"]) == last_time
    many = (await api.http.get("/api/v1/telemetry/latest", headers=admin)).json()
    assert {d["device_id"]: list(d["metrics"]) for d in many["items"]} == {
        "probe": ["temperature"],
        "quiet": [],
    }


async def test_rejected_messages_are_listed_with_their_bytes(
    api: Api, admin: dict[str, str]
) -> None:
    raw = b'{"temperature": NaN}\xff'
    async with await psycopg.AsyncConnection.connect(api.url, autocommit=True) as conn:
        await write_batch(
            conn,
            Batch(
                rejected=[
                    RejectedMessage(
                        START,
                        "probe",
                        "devices/probe/telemetry",
                        "non_finite_value",
                        "temperature is not a finite number",
                        raw,
                    ),
                    RejectedMessage(
                        START, "other", "devices/other/telemetry", "invalid_json", "x", b"{"
                    ),
                ]
            ),
            PartitionCache(),
        )
    answer = (
        await api.http.get("/api/v1/rejected", headers=admin, params={"device_id": "probe"})
    ).json()
    [item] = answer["items"]
    assert (item["reason"], item["topic"], item["payload_text"]) == (
        "non_finite_value",
        "devices/probe/telemetry",
        None,
    )
    assert base64.b64decode(item["payload_base64"]) == raw
    by_reason = (
        await api.http.get("/api/v1/rejected", headers=admin, params={"reason": "invalid_json"})
    ).json()
    assert [i["payload_text"] for i in by_reason["items"]] == ["{"]


async def test_health_ready_and_metrics(api: Api) -> None:
    assert (await api.http.get("/health")).json() == {"status": "ok"}
    ready = await api.http.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": True, "migrations": True, "broker": True}
    await api.http.get("/api/v1/devices")
    text = (await api.http.get("/metrics")).text
    assert (
        'fieldline_http_requests_total{method="GET",route="/api/v1/devices",status="401"}' in text
    )
    assert "fieldline_devices_online 0.0" in text
    assert "fieldline_ingest_latency_seconds_bucket" in text


async def test_ready_is_503_until_the_broker_is_up(api: Api) -> None:
    api.context.broker_started.clear()
    answer = await api.http.get("/ready")
    assert answer.status_code == 503
    assert answer.json() == {
        "status": "not_ready",
        "checks": {"database": True, "migrations": True, "broker": False},
    }
    await api.broker.stop()
    api.context.broker_started.set()
    assert (await api.http.get("/ready")).status_code == 503
