"""A simulated fleet against a real Mosquitto, seen through a subscriber as the platform sees it."""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from datetime import datetime

import orjson
import pytest

from fieldline.ops.sockets import free_port
from fieldline.sim import BadKind, FleetOptions, FleetProgress, SimulationReport, run_fleet

from .conftest import Broker, Received, Subscriber

SENSORS = {"temperature", "humidity", "battery_voltage", "soil_moisture", "pressure"}
MAX_PAYLOAD = 65_536


def options(broker: Broker, **overrides: object) -> FleetOptions:
    base: dict[str, object] = {
        "devices": 3,
        "rate": 5.0,
        "duration": 2.0,
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "heartbeat_interval": 0.5,
        "seed": 7,
    }
    base.update(overrides)
    return FleetOptions(**base)  # type: ignore[arg-type]


def timestamp_form(value: object) -> str:
    if isinstance(value, str):
        datetime.fromisoformat(value)
        return "iso"
    assert isinstance(value, int | float)
    return "ms" if value > 1e11 else "s"


def epoch_seconds(value: object) -> float:
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    assert isinstance(value, int | float)
    return value / 1000 if value > 1e11 else float(value)


def assert_reading_shape(reading: dict[str, object], device_id: str) -> None:
    assert set(reading) == {
        "message_id",
        "device_id",
        "timestamp",
        "sensors",
        "firmware_version",
        "signal_strength",
    }
    assert reading["device_id"] == device_id
    assert reading["firmware_version"] == "v1.2.0"
    sensors = reading["sensors"]
    assert isinstance(sensors, dict)
    assert set(sensors) == SENSORS
    assert all(isinstance(v, float) and math.isfinite(v) for v in sensors.values())
    assert 3.3 <= sensors["battery_voltage"] <= 4.2
    assert isinstance(reading["signal_strength"], int)
    assert -90 <= reading["signal_strength"] <= -50
    assert abs(epoch_seconds(reading["timestamp"]) - time.time()) < 60


def classify(message: Received) -> str:
    """What the platform's ingest should decide about one telemetry payload."""
    if len(message.payload) > MAX_PAYLOAD:
        return BadKind.OVERSIZED
    try:
        body = json.loads(message.payload)  # stdlib: accepts the NaN literal, orjson does not
    except ValueError:
        return BadKind.NOT_JSON
    if "readings" in body:
        return "batch"
    if any(isinstance(v, float) and math.isnan(v) for v in body["sensors"].values()):
        return BadKind.NAN_VALUE
    if body["device_id"] != message.device_id:
        return BadKind.SPOOFED_DEVICE_ID
    if epoch_seconds(body["timestamp"]) > time.time() + 3600:
        return BadKind.FUTURE_TIMESTAMP
    return "single"


def assert_report_matches(report: SimulationReport, subscriber: Subscriber) -> None:
    received: dict[str, list[Received]] = defaultdict(list)
    for message in subscriber.of_kind("telemetry"):
        received[message.device_id].append(message)
    for device in report.devices:
        msgs = received[device.device_id]
        assert len(msgs) == device.telemetry_ok + device.bad_total + device.duplicates
        kinds = Counter(classify(m) for m in msgs)
        for kind in BadKind:
            assert kinds[kind] == device.bad[kind], (device.device_id, kind)
        seen: set[str] = set()
        good_ids: list[str] = []
        duplicates = 0
        for m in msgs:
            if classify(m) == "single":
                message_id = orjson.loads(m.payload)["message_id"]
                if message_id in seen:
                    duplicates += 1
                    continue
                seen.add(message_id)
                good_ids.append(message_id)
            elif classify(m) == "batch":
                good_ids.extend(r["message_id"] for r in orjson.loads(m.payload)["readings"])
        assert duplicates == device.duplicates
        assert kinds["batch"] == device.batches
        assert good_ids == list(device.message_ids)
        assert len(good_ids) == device.readings
        assert device.points == device.readings * 6


async def test_fleet_speaks_the_device_contract(broker: Broker, subscriber: Subscriber) -> None:
    report = await run_fleet(options(broker))
    await subscriber.settle()

    assert report.devices_connected == 3
    assert report.connect_failures == 0
    # 5 msg/s for 2 s: about 10 slots each; the phase offset may cost one.
    assert all(9 <= d.telemetry_ok <= 11 for d in report.devices)
    assert sum(report.bad.values()) == 0

    forms: Counter[str] = Counter()
    for device_id in ("sim-0001", "sim-0002", "sim-0003"):
        mine = [m for m in subscriber.messages if m.device_id == device_id]
        first, last = mine[0], mine[-1]
        assert first.kind == "status"
        online = first.json()
        assert online["status"] == "online"
        assert online["firmware_version"] == "v1.2.0"
        assert {"uptime_s", "heap_free", "boot_count"} <= set(online)
        # A clean shutdown says goodbye itself: not the bare last will.
        assert last.kind == "status"
        assert last.json()["status"] == "offline"
        assert "uptime_s" in last.json()
        assert any(m.kind == "heartbeat" for m in mine)

        timestamps = []
        for m in mine:
            if m.kind == "telemetry":
                reading = m.json()
                assert_reading_shape(reading, device_id)
                forms[timestamp_form(reading["timestamp"])] += 1
                timestamps.append(epoch_seconds(reading["timestamp"]))
        assert timestamps == sorted(timestamps)
        assert len(set(timestamps)) == len(timestamps)
    assert set(forms) == {"s", "ms", "iso"}

    # Devices do not fire in the same millisecond.
    firsts = [
        next(m.json()["timestamp"] for m in subscriber.of_kind("telemetry") if m.device_id == d)
        for d in ("sim-0001", "sim-0002", "sim-0003")
    ]
    assert len({epoch_seconds(t) for t in firsts}) == 3

    assert_report_matches(report, subscriber)


async def test_bad_duplicate_and_batch_messages(broker: Broker, subscriber: Subscriber) -> None:
    report = await run_fleet(
        options(broker, duration=2.5, bad_every=2, duplicate_every=3, batch_every=5, batch_size=4)
    )
    await subscriber.settle()

    assert all(n > 0 for n in report.bad.values()), report.bad
    assert report.duplicates > 0
    assert all(d.batches > 0 for d in report.devices)
    assert_report_matches(report, subscriber)

    for message in subscriber.of_kind("telemetry"):
        kind = classify(message)
        if kind == "batch":
            readings = orjson.loads(message.payload)["readings"]
            assert len(readings) == 4
            for reading in readings:
                assert_reading_shape(reading, message.device_id)
        elif kind == BadKind.SPOOFED_DEVICE_ID:
            claimed = orjson.loads(message.payload)["device_id"]
            assert claimed.startswith("sim-")
            assert claimed != message.device_id
        elif kind == BadKind.NAN_VALUE:
            assert b"NaN" in message.payload
    # A duplicate is byte-for-byte an earlier good message.
    payloads = [m.payload for m in subscriber.of_kind("telemetry") if classify(m) == "single"]
    repeated = [p for p, n in Counter(payloads).items() if n > 1]
    assert repeated


async def test_killed_connections_fire_the_last_will(
    broker: Broker, subscriber: Subscriber
) -> None:
    report = await run_fleet(options(broker, duration=0.5, kill=True))
    await subscriber.settle(quiet_s=0.5)

    assert report.devices_connected == 3
    for device_id in ("sim-0001", "sim-0002", "sim-0003"):
        statuses = [m.payload for m in subscriber.of_kind("status") if m.device_id == device_id]
        assert statuses[-1] == b'{"status":"offline"}'
        assert orjson.loads(statuses[0])["status"] == "online"
        assert len(statuses) == 2


async def test_incidents_on_demand_a_hot_device_and_one_that_drops_off(
    broker: Broker, subscriber: Subscriber
) -> None:
    started = time.time()
    report = await run_fleet(options(broker, duration=3.0, hot=1, drop=1, incident_after=1.5))
    await subscriber.settle()
    assert report.devices_connected == 3

    def temperatures(device_id: str, *, after: bool) -> list[float]:
        return [
            m.json()["sensors"]["temperature"]
            for m in subscriber.of_kind("telemetry")
            if m.device_id == device_id
            and (epoch_seconds(m.json()["timestamp"]) - started >= 1.7) == after
            and abs(epoch_seconds(m.json()["timestamp"]) - started - 1.5) > 0.2
        ]

    # sim-0001 runs hot: 20 °C above its own earlier readings (its daily cycle and
    # noise move far less than that in three seconds); sim-0002 stays as it was.
    hot_before, hot_after = (
        temperatures("sim-0001", after=False),
        temperatures("sim-0001", after=True),
    )
    assert hot_before and hot_after
    assert min(hot_after) > max(hot_before) + 15
    calm = temperatures("sim-0002", after=False) + temperatures("sim-0002", after=True)
    assert max(calm) - min(calm) < 5

    # sim-0003 vanished: the broker sent its bare last will, and nothing came after it.
    mine = [m for m in subscriber.messages if m.device_id == "sim-0003"]
    will = next(i for i, m in enumerate(mine) if m.payload == b'{"status":"offline"}')
    assert mine[will + 1 :] == []
    last_reading = max(epoch_seconds(m.json()["timestamp"]) for m in mine if m.kind == "telemetry")
    assert last_reading - started < 2.0
    # The others said goodbye themselves at the end (not the bare will).
    for device_id in ("sim-0001", "sim-0002"):
        statuses = [m for m in subscriber.of_kind("status") if m.device_id == device_id]
        assert statuses[-1].json()["status"] == "offline"
        assert "uptime_s" in statuses[-1].json()


async def test_unreachable_broker_counts_connect_failures() -> None:
    nobody_listens = Broker("127.0.0.1", free_port("127.0.0.1"))

    report = await run_fleet(options(nobody_listens, devices=2, duration=0.2))

    assert report.devices_connected == 0
    assert report.connect_failures >= 2
    assert report.telemetry_total == 0


async def test_devices_split_across_processes(broker: Broker, subscriber: Subscriber) -> None:
    progress: list[FleetProgress] = []
    report = await run_fleet(
        options(broker, devices=4, duration=1.5, processes=2, progress_interval=0.5),
        on_progress=progress.append,
    )
    await subscriber.settle()

    assert [d.device_id for d in report.devices] == [f"sim-000{n}" for n in range(1, 5)]
    assert report.devices_connected == 4
    assert progress
    assert progress[-1].devices == 4
    assert_report_matches(report, subscriber)


@pytest.mark.parametrize(
    "bad",
    [
        {"devices": 0},
        {"rate": 0.0},
        {"qos": 2},
        {"prefix": "bad/prefix"},
        {"create": True},
        {"devices": 2, "hot": 2, "drop": 1},
        {"hot": -1},
        {"incident_after": -1.0},
    ],
)
def test_options_refuse_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        FleetOptions(**bad)  # type: ignore[arg-type]
