"""The core pipeline end to end: devices registered through the API, real MQTT clients,
readings stored exactly once, bad input rejected and visible, access rules enforced."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import subprocess
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError

from tests.e2e.conftest import DeviceClient, Platform, eventually
from tests.mqtt_clients import NoReconnectClient

# How gmqtt reports a refused CONNECT (bad credentials) or a closed connection.
REFUSED = (MQTTConnectError, ConnectionError, TimeoutError)
NOW = datetime.now(UTC).replace(microsecond=0)


async def points(
    platform: Platform, device_id: str, metric: str, **params: Any
) -> list[tuple[datetime, float]]:
    async with platform.http() as http:
        answer = await http.get(
            f"/api/v1/devices/{device_id}/telemetry",
            params={
                "metric": metric,
                "start": (NOW - timedelta(days=2)).isoformat(),
                "end": (NOW + timedelta(hours=1)).isoformat(),
                "limit": 10_000,
                **params,
            },
        )
    assert answer.status_code == 200, answer.text
    return [(datetime.fromisoformat(p["time"]), p["value"]) for p in answer.json()["points"]]


async def device(platform: Platform, device_id: str) -> dict[str, Any]:
    async with platform.http() as http:
        answer = await http.get(f"/api/v1/devices/{device_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def test_every_accepted_reading_is_stored_exactly_once(platform: Platform) -> None:
    device_id = unique("field")
    sensor = await DeviceClient(
        device_id, await platform.register(device_id), platform.mqtt_port
    ).connect()
    t = [NOW - timedelta(minutes=50 - i) for i in range(8)]
    sensor.publish("status", orjson.dumps({"status": "online", "firmware_version": "v1.4.2"}))
    messages = [
        # seconds, milliseconds, ISO 8601, with sensors and a top-level metric
        {
            "message_id": "m1",
            "device_id": device_id,
            "timestamp": int(t[0].timestamp()),
            "sensors": {"temperature": 20.5, "humidity": 40},
            "signal_strength": -67,
        },
        {
            "message_id": "m2",
            "timestamp": int(t[1].timestamp() * 1000),
            "sensors": {"temperature": 21.0},
        },
        {
            "message_id": "m3",
            "timestamp": t[2].isoformat().replace("+00:00", "Z"),
            "temperature": 21.5,
            "mode": "eco",
        },
        # the same message three times
        {"message_id": "m4", "timestamp": int(t[3].timestamp()), "temperature": 22.0},
        {"message_id": "m4", "timestamp": int(t[3].timestamp()), "temperature": 22.0},
        # a batch in both forms, one reading repeating m1
        {
            "readings": [
                {"message_id": "m5", "timestamp": int(t[4].timestamp()), "temperature": 22.5},
                {"message_id": "m6", "timestamp": int(t[5].timestamp()), "temperature": 23.0},
            ]
        },
        [
            {"message_id": "m7", "timestamp": int(t[6].timestamp()), "temperature": 23.5},
            {
                "message_id": "m1",
                "device_id": device_id,
                "timestamp": int(t[0].timestamp()),
                "sensors": {"temperature": 20.5, "humidity": 40},
                "signal_strength": -67,
            },
        ],
        {"message_id": "m4", "timestamp": int(t[3].timestamp()), "temperature": 22.0},
    ]
    for message in messages:
        sensor.publish("telemetry", orjson.dumps(message))
    expected = [(t[i], v) for i, v in enumerate([20.5, 21.0, 21.5, 22.0, 22.5, 23.0, 23.5])]

    async def all_stored() -> None:
        assert await points(platform, device_id, "temperature") == expected

    await eventually(all_stored)
    await asyncio.sleep(0.5)  # any straggling duplicate would land by now
    assert await points(platform, device_id, "temperature") == expected
    assert await points(platform, device_id, "humidity") == [(t[0], 40.0)]
    assert await points(platform, device_id, "signal_strength") == [(t[0], -67.0)]
    async with platform.http() as http:
        latest = (await http.get(f"/api/v1/devices/{device_id}/telemetry/latest")).json()
        status = (await http.get(f"/api/v1/devices/{device_id}/status")).json()
    assert latest["metrics"]["temperature"]["value"] == 23.5
    async with platform.http() as http:
        attributes = (await http.get(f"/api/v1/devices/{device_id}/attributes")).json()
    assert attributes["attributes"]["mode"]["value"] == "eco"
    assert attributes["attributes"]["firmware_version"]["value"] == "v1.4.2"
    assert (status["status"], status["firmware_version"]) == ("online", "v1.4.2")
    await sensor.close()


async def test_bucketed_queries_equal_independent_aggregates(platform: Platform) -> None:
    device_id = unique("bucket")
    sensor = await DeviceClient(
        device_id, await platform.register(device_id), platform.mqtt_port
    ).connect()
    readings = [
        (NOW - timedelta(minutes=90) + timedelta(seconds=97 * i), round(i * 0.37 % 7, 2))
        for i in range(50)
    ]
    sensor.publish(
        "telemetry",
        orjson.dumps(
            {
                "readings": [
                    {"message_id": f"r{i}", "timestamp": int(at.timestamp()), "load": value}
                    for i, (at, value) in enumerate(readings)
                ]
            }
        ),
    )
    await eventually(lambda: _count(platform, device_id, 50))
    for agg, combine in (
        ("avg", statistics.fmean),
        ("min", min),
        ("max", max),
        ("count", len),
        ("sum", sum),
    ):
        groups: dict[datetime, list[float]] = defaultdict(list)
        for at, value in readings:
            groups[at.replace(minute=at.minute - at.minute % 10, second=0)].append(value)
        want = [(k, float(combine(v))) for k, v in sorted(groups.items())]
        got = await points(platform, device_id, "load", bucket="10m", agg=agg)
        assert [k for k, _ in got] == [k for k, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want])
    await sensor.close()


async def _count(platform: Platform, device_id: str, n: int) -> None:
    assert len(await points(platform, device_id, "load")) == n


async def test_bad_payloads_are_rejected_with_reasons_and_kept(platform: Platform) -> None:
    device_id, other = unique("bad"), unique("other")
    await platform.register(other)
    sensor = await DeviceClient(
        device_id, await platform.register(device_id), platform.mqtt_port
    ).connect()
    future = int((NOW + timedelta(days=1)).timestamp())
    bad = {
        b"{not json": "invalid_json",
        b'{"temperature": ' + b"1" * 70_000 + b"}": "too_large",
        b'{"temperature": NaN}': "non_finite_value",
        b'{"temperature": 1, "timestamp": ' + str(future).encode() + b"}": "future_timestamp",
        b'{"temperature": 1, "device_id": "' + other.encode() + b'"}': "device_mismatch",
    }
    for payload in bad:
        sensor.publish("telemetry", payload)
    sensor.publish("telemetry", b'{"temperature": 19.0}')  # and one good reading

    async def all_rejected() -> list[dict[str, Any]]:
        async with platform.http() as http:
            items = (await http.get("/api/v1/rejected", params={"device_id": device_id})).json()[
                "items"
            ]
        assert len(items) == len(bad)
        return list(items)

    items = await eventually(all_rejected)
    import base64

    assert {base64.b64decode(i["payload_base64"]): i["reason"] for i in items} == bad
    assert all(i["topic"] == f"devices/{device_id}/telemetry" for i in items)
    assert [v for _, v in await points(platform, device_id, "temperature")] == [19.0]
    assert await points(platform, other, "temperature") == []
    async with platform.http() as http:
        metrics = (await http.get("/metrics")).text
    for reason in set(bad.values()):
        assert f'fieldline_messages_rejected_total{{reason="{reason}"}}' in metrics
    await sensor.close()


async def test_a_device_cannot_use_another_devices_topics(platform: Platform) -> None:
    alice, bob = unique("alice"), unique("bob")
    alice_client = await DeviceClient(
        alice, await platform.register(alice), platform.mqtt_port
    ).connect()
    await platform.register(bob)
    # Subscribing to another device's downlink is refused (SUBACK failure code).
    assert await alice_client.subscribe(f"devices/{bob}/commands") >= 0x80
    assert await alice_client.subscribe(f"devices/{alice}/commands") == 1
    # Publishing as another device stores nothing for it (the broker may drop the sender).
    alice_client.publish("telemetry", b'{"temperature": 99}', device_id=bob)
    alice_client.publish("status", b'{"status": "online"}', device_id=bob)
    await asyncio.sleep(1.0)
    assert await points(platform, bob, "temperature") == []
    assert (await device(platform, bob))["status"] == "never_seen"
    await alice_client.close()


async def test_no_device_can_take_another_clients_session(platform: Platform) -> None:
    """A device under another device's client id, or ingest's, is refused (issue 12: on
    amqtt one such CONNECT ended ingest's session and nothing was stored for anyone)."""
    victim_id, thief_id = unique("victim"), unique("thief")
    victim = await DeviceClient(
        victim_id, await platform.register(victim_id), platform.mqtt_port
    ).connect()
    thief_password = await platform.register(thief_id)
    for client_id in (victim_id, "fieldline-ingest-1"):
        for clean_session in (True, False):
            thief = NoReconnectClient(client_id, clean_session=clean_session)
            thief.set_auth_credentials(thief_id, thief_password)
            try:
                with pytest.raises(REFUSED):
                    await asyncio.wait_for(
                        thief.connect("127.0.0.1", platform.mqtt_port, version=MQTTv311), 10
                    )
            finally:
                with contextlib.suppress(Exception):
                    await thief.disconnect()

    victim.publish("telemetry", b'{"temperature": 12.5}')
    await eventually(lambda: _has_points(platform, victim_id))
    assert not victim.disconnected.is_set()
    await victim.close()


async def test_disabled_and_rotated_devices_are_refused_at_once(platform: Platform) -> None:
    device_id = unique("gate")
    password = await platform.register(device_id)
    connected = await DeviceClient(device_id, password, platform.mqtt_port).connect()
    async with platform.http() as http:
        assert (
            await http.patch(f"/api/v1/devices/{device_id}", json={"enabled": False})
        ).status_code == 200
    await asyncio.wait_for(connected.disconnected.wait(), timeout=10)
    with pytest.raises(REFUSED):
        await DeviceClient(device_id, password, platform.mqtt_port).connect()
    async with platform.http() as http:
        assert (
            await http.patch(f"/api/v1/devices/{device_id}", json={"enabled": True})
        ).status_code == 200
        again = await DeviceClient(device_id, password, platform.mqtt_port).connect()
        rotated = await http.post(f"/api/v1/devices/{device_id}/credentials")
    assert rotated.status_code == 200, rotated.text
    new_password = rotated.json()["mqtt"]["password"]
    await asyncio.wait_for(again.disconnected.wait(), timeout=10)
    with pytest.raises(REFUSED):
        await DeviceClient(device_id, password, platform.mqtt_port).connect()
    fresh = await DeviceClient(device_id, new_password, platform.mqtt_port).connect()
    fresh.publish("telemetry", b'{"temperature": 5}')
    await eventually(lambda: _has_points(platform, device_id))
    async with platform.http() as http:
        assert (await http.delete(f"/api/v1/devices/{device_id}")).status_code == 204
    await asyncio.wait_for(fresh.disconnected.wait(), timeout=10)
    with pytest.raises(REFUSED):
        await DeviceClient(device_id, new_password, platform.mqtt_port).connect()


async def _has_points(platform: Platform, device_id: str) -> None:
    assert await points(platform, device_id, "temperature")


async def test_the_last_will_turns_a_device_offline(platform: Platform) -> None:
    assert shutil.which("mosquitto_pub"), "scripts/test installs mosquitto-clients"
    device_id = unique("will")
    password = await platform.register(device_id)
    # The firmware: one connection under its own id as client id (a second one would take
    # this one over), with its last will, announcing itself online and staying connected.
    firmware = subprocess.Popen(
        [
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(platform.mqtt_port),
            "-V",
            "mqttv311",
            "-u",
            device_id,
            "-P",
            password,
            "-i",
            device_id,
            "-t",
            f"devices/{device_id}/status",
            "-q",
            "1",
            "-l",
            "--will-topic",
            f"devices/{device_id}/status",
            "--will-payload",
            '{"status":"offline"}',
            "--will-qos",
            "1",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        assert firmware.stdin is not None
        firmware.stdin.write(b'{"status": "online"}\n')
        firmware.stdin.flush()

        async def online() -> None:
            assert (await device(platform, device_id))["status"] == "online"

        await eventually(online)
        assert firmware.poll() is None, "the device process could not connect"
    finally:
        firmware.kill()  # no DISCONNECT: the broker publishes the will
        firmware.wait()
        if firmware.stdin is not None:
            firmware.stdin.close()

    async def offline() -> None:
        assert (await device(platform, device_id))["status"] == "offline"

    await eventually(offline)


async def test_roles_hold_over_http(platform: Platform) -> None:
    async with platform.http() as http:
        for role in ("viewer", "operator"):
            assert (
                await http.post(
                    "/api/v1/users",
                    json={"username": unique(role), "password": "long-enough-pw", "role": role},
                )
            ).status_code == 201
        users = (await http.get("/api/v1/users")).json()["items"]
    import httpx

    for user in users:
        if user["role"] == "admin":
            continue
        token = httpx.post(
            f"{platform.api_url}/api/v1/auth/login",
            json={"username": user["username"], "password": "long-enough-pw"},
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        create = httpx.post(
            f"{platform.api_url}/api/v1/devices", headers=headers, json={"device_id": unique("x")}
        )
        manage = httpx.get(f"{platform.api_url}/api/v1/users", headers=headers)
        if user["role"] == "viewer":
            assert create.status_code == 403
        else:
            assert create.status_code == 201
        assert manage.status_code == 403
        assert manage.json()["error"]["code"] == "forbidden"
