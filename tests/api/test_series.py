"""Many series in one call answer the same points as a call per series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fieldline.domain.readings import Reading
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.api.conftest import Api
from tests.conftest import create_devices

END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START = END - timedelta(days=2)


async def test_many_series_answer_as_one_call_per_series(api: Api) -> None:
    devices = ["gh-1", "gh-2", "gh-3"]
    async with api.pool.connection() as conn:
        await create_devices(conn, *devices)
        for n, device in enumerate(devices):
            readings = [
                Reading(
                    message_id=f"{device}-{i}",
                    time=START + timedelta(minutes=13 * i),
                    metrics={"temperature": 20 + n + (i % 9) / 4, "humidity": 50.0 - i % 7},
                    attributes={},
                )
                for i in range(2 * 24 * 60 // 13)
            ]
            batch = Batch(telemetry=[DeviceReadings(device, END, readings)])
            await write_batch(conn, batch, PartitionCache())  # type: ignore[arg-type]
    viewer = await api.user("viewer")
    # Whole hours read the rollups; 10 min buckets read raw points.
    filled = len({13 * i // 10 for i in range(2 * 24 * 60 // 13)})  # 10 min buckets with data
    for bucket, agg, count in (("1h", "max", 48), ("10m", "avg", filled)):
        await _same_points(api, viewer, devices, bucket, agg, count)


async def _same_points(
    api: Api, viewer: dict[str, str], devices: list[str], bucket: str, agg: str, count: int
) -> None:
    common = {"start": START.isoformat(), "end": END.isoformat(), "bucket": bucket, "agg": agg}
    params = [("device_id", d) for d in devices] + [
        ("metric", "temperature"),
        ("metric", "humidity"),
    ]
    many = await api.http.get("/api/v1/series", params=[*params, *common.items()], headers=viewer)
    assert many.status_code == 200, many.text
    items = many.json()["items"]
    assert [(s["device_id"], s["metric"]) for s in items] == [
        (d, m) for d in devices for m in ("temperature", "humidity")
    ]
    for series in items:
        one = await api.http.get(
            f"/api/v1/devices/{series['device_id']}/telemetry",
            params={"metric": series["metric"], **common},
            headers=viewer,
        )
        assert one.status_code == 200, one.text
        assert series == one.json()
        assert len(series["points"]) == count

    unknown = await api.http.get(
        "/api/v1/series",
        params={"device_id": "ghost", "metric": "temperature", "bucket": "1h"},
        headers=viewer,
    )
    assert unknown.status_code == 404
    too_many = [("device_id", "gh-1"), ("bucket", "1h")] + [("metric", f"m{i}") for i in range(201)]
    refused = await api.http.get("/api/v1/series", params=too_many, headers=viewer)
    assert refused.status_code == 422 and "at most 200 series" in refused.text
