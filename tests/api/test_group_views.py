"""A group as one thing (issue 16): its trend across devices, commands to all or some of
its devices, many devices enabled or disabled at once, and where devices are on a map."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from fieldline.domain.readings import Reading
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.api.conftest import Api

END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
START = END - timedelta(hours=6)


async def _group_with_devices(
    api: Api, headers: dict[str, str], group: str, devices: list[str], **fields: str
) -> None:
    answer = await api.http.post("/api/v1/groups", json={"name": group}, headers=headers)
    assert answer.status_code == 201, answer.text
    for device in devices:
        created = await api.http.post(
            "/api/v1/devices", json={"device_id": device, "group": group, **fields}, headers=headers
        )
        assert created.status_code == 201, created.text


async def _store(api: Api, device: str, readings: list[tuple[datetime, dict[str, float]]]) -> None:
    batch = Batch(
        telemetry=[
            DeviceReadings(
                device,
                END,
                [
                    Reading(message_id=f"{device}-{i}", time=t, metrics=m, attributes={})
                    for i, (t, m) in enumerate(readings)
                ],
            )
        ]
    )
    async with api.pool.connection() as conn:
        await write_batch(conn, batch, PartitionCache())  # type: ignore[arg-type]


async def test_a_groups_trend_is_mean_min_and_max_across_its_devices(api: Api) -> None:
    operator = await api.user("operator")
    members = ["north-1", "north-2", "north-3"]
    await _group_with_devices(api, operator, "north", members)
    await _group_with_devices(api, operator, "south", ["south-1"])
    expected: dict[datetime, list[tuple[str, float]]] = defaultdict(list)
    for n, device in enumerate([*members, "south-1"]):
        readings = []
        for i in range(0, 6 * 60, 7 + n):  # each device on its own beat
            at = START + timedelta(minutes=i, seconds=n)
            value = 10.0 * n + (i % 11) / 4
            readings.append((at, {"temperature": value}))
            if device != "south-1":
                expected[START + timedelta(minutes=i - i % 30)].append((device, value))
        await _store(api, device, readings)

    viewer = await api.user("viewer")
    for bucket, width in (("30m", timedelta(minutes=30)), ("1h", timedelta(hours=1))):
        answer = await api.http.get(
            "/api/v1/groups/north/trend",
            params={
                "metric": "temperature",
                "bucket": bucket,
                "start": START.isoformat(),
                "end": END.isoformat(),
            },
            headers=viewer,
        )
        assert answer.status_code == 200, answer.text
        trend = answer.json()
        assert trend["devices"] == 3
        by_bucket: dict[datetime, list[tuple[str, float]]] = defaultdict(list)
        for start, values in expected.items():
            by_bucket[start - (start - START) % width].extend(values)
        assert len(trend["points"]) == len(by_bucket)
        for point in trend["points"]:
            values = by_bucket[datetime.fromisoformat(point["time"])]
            numbers = [v for _, v in values]
            assert abs(point["avg"] - sum(numbers) / len(numbers)) < 1e-9, bucket
            assert point["min"] == min(numbers) and point["max"] == max(numbers)
            assert point["count"] == len(numbers)
            assert point["devices"] == len({d for d, _ in values}) == 3

    missing = await api.http.get(
        "/api/v1/groups/nowhere/trend", params={"metric": "t", "bucket": "1h"}, headers=viewer
    )
    assert missing.status_code == 404 and missing.json()["error"]["message"]


async def test_a_command_goes_to_every_enabled_device_of_the_group(api: Api) -> None:
    operator = await api.user("operator")
    members = ["pump-1", "pump-2", "pump-3"]
    await _group_with_devices(api, operator, "pumps", members)
    off = await api.http.patch("/api/v1/devices/pump-3", json={"enabled": False}, headers=operator)
    assert off.status_code == 200

    sent = await api.http.post(
        "/api/v1/groups/pumps/commands",
        json={"name": "flush", "params": {"seconds": 5}},
        headers=operator,
    )
    assert sent.status_code == 201, sent.text
    answer = sent.json()
    assert [c["device_id"] for c in answer["items"]] == ["pump-1", "pump-2"]
    assert answer["refused"] == [{"device_id": "pump-3", "reason": "disabled"}]
    for command in answer["items"]:
        listed = await api.http.get(
            f"/api/v1/devices/{command['device_id']}/commands", headers=operator
        )
        assert [(c["name"], c["params"]) for c in listed.json()["items"]] == [
            ("flush", {"seconds": 5})
        ]

    selected = await api.http.post(
        "/api/v1/groups/pumps/commands",
        json={"name": "reboot", "device_ids": ["pump-2"]},
        headers=operator,
    )
    assert [c["device_id"] for c in selected.json()["items"]] == ["pump-2"]
    outside = await api.http.post(
        "/api/v1/groups/pumps/commands",
        json={"name": "reboot", "device_ids": ["pump-1", "elsewhere"]},
        headers=operator,
    )
    assert outside.status_code == 422 and "elsewhere" in outside.json()["error"]["message"]
    viewer = await api.user("viewer")
    refused = await api.http.post(
        "/api/v1/groups/pumps/commands", json={"name": "reboot"}, headers=viewer
    )
    assert refused.status_code == 403


async def test_many_devices_are_disabled_and_enabled_at_once(api: Api) -> None:
    operator = await api.user("operator")
    await _group_with_devices(api, operator, "depot", ["van-1", "van-2", "van-3"])
    answer = await api.http.post(
        "/api/v1/devices/enabled",
        json={"device_ids": ["van-1", "van-2", "ghost"], "enabled": False},
        headers=operator,
    )
    assert answer.status_code == 200, answer.text
    assert [(d["device_id"], d["enabled"]) for d in answer.json()["items"]] == [
        ("van-1", False),
        ("van-2", False),
    ]
    assert answer.json()["missing"] == ["ghost"]
    states = {}
    for device in ("van-1", "van-2", "van-3"):
        states[device] = (await api.http.get(f"/api/v1/devices/{device}", headers=operator)).json()[
            "enabled"
        ]
    assert states == {"van-1": False, "van-2": False, "van-3": True}
    audit = await api.http.get(
        "/api/v1/audit", params={"action": "device.disable"}, headers=await api.user("admin")
    )
    assert {e["target_id"] for e in audit.json()["items"]} >= {"van-1", "van-2"}

    back = await api.http.post(
        "/api/v1/devices/enabled", json={"device_ids": ["van-1"], "enabled": True}, headers=operator
    )
    assert [d["enabled"] for d in back.json()["items"]] == [True]


async def test_positions_follow_metric_metadata_and_the_common_names(api: Api) -> None:
    operator = await api.user("operator")
    await _group_with_devices(api, operator, "trucks", ["truck-1"], device_type="tracker")
    await _group_with_devices(api, operator, "bikes", ["bike-1", "bike-2", "bike-3"])
    for metric, kind in (("gps_y", "latitude"), ("gps_x", "longitude")):
        put = await api.http.put(
            f"/api/v1/device-types/tracker/metrics/{metric}", json={"kind": kind}, headers=operator
        )
        assert put.status_code == 200, put.text
    now = datetime.now(UTC)
    await _store(api, "truck-1", [(now, {"gps_y": 59.91, "gps_x": 10.75, "speed": 40.0})])
    await _store(api, "bike-1", [(now, {"lat": 48.85, "lon": 2.35})])
    await _store(api, "bike-2", [(now, {"lat": 48.86})])  # no longitude: not placed
    await _store(api, "bike-3", [(now, {"lat": 123.0, "lon": 2.0})])  # off the globe

    viewer = await api.user("viewer")
    every = await api.http.get("/api/v1/positions", headers=viewer)
    assert every.status_code == 200, every.text
    placed = {p["device_id"]: p for p in every.json()["items"]}
    assert set(placed) == {"truck-1", "bike-1"}
    assert (placed["truck-1"]["latitude"], placed["truck-1"]["longitude"]) == (59.91, 10.75)
    assert placed["truck-1"]["latitude_metric"] == "gps_y"
    assert (placed["bike-1"]["group"], placed["bike-1"]["longitude_metric"]) == ("bikes", "lon")

    bikes = await api.http.get("/api/v1/positions", params={"group": "bikes"}, headers=viewer)
    assert [p["device_id"] for p in bikes.json()["items"]] == ["bike-1"]
    nowhere = await api.http.get("/api/v1/positions", params={"group": "x"}, headers=viewer)
    assert nowhere.status_code == 404


async def test_maps_name_their_tile_server_and_the_page_may_load_its_images(api: Api) -> None:
    viewer = await api.user("viewer")
    settings = (await api.http.get("/api/v1/map", headers=viewer)).json()
    assert settings["tiles_url"] == "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    assert "OpenStreetMap" in settings["attribution"]
    page = await api.http.get("/")
    assert (
        "img-src 'self' data: https://tile.openstreetmap.org;"
        in (page.headers["content-security-policy"])
    )
    api.reconfigure(map_tiles_url="")
    assert (await api.http.get("/api/v1/map", headers=viewer)).json()["tiles_url"] is None
