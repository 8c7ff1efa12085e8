"""docs/alerts.md's example on a real `fieldline up`: a cold room above 8 °C for a while
reaches a signed webhook once, hovering inside the hysteresis band opens nothing new, the
return below the clear value resolves it, and a device that vanishes fires its offline rule.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fieldline.bench.receiver import Delivery, WebhookReceiver
from tests.e2e.conftest import DeviceClient, Platform, eventually

SECRET = "s" * 32


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hook = WebhookReceiver()
    await hook.start()
    try:
        yield hook
    finally:
        await hook.stop()


async def post(platform: Platform, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with platform.http() as http:
        answer = await http.post(path, json=body)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def alerts_of(platform: Platform, device_id: str) -> list[dict[str, Any]]:
    async with platform.http() as http:
        answer = await http.get("/api/v1/alerts", params={"device_id": device_id})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def reading(value: float) -> str:
    return json.dumps(
        {
            "message_id": str(uuid.uuid4()),
            "timestamp": time.time(),
            "sensors": {"temperature": value},
        }
    )


def signature_holds(delivery: Delivery) -> bool:
    """What a receiver does: the HMAC of the bytes it received, before parsing them."""
    expected = "sha256=" + hmac.new(SECRET.encode(), delivery.raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, delivery.headers["x-fieldline-signature"])


async def publish_for(device: DeviceClient, value: float, seconds: float) -> None:
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        device.publish("telemetry", reading(value))
        await asyncio.sleep(0.5)


async def test_a_warm_cold_room_reaches_a_signed_webhook_once(
    platform: Platform, receiver: WebhookReceiver
) -> None:
    device_id = f"cold-{uuid.uuid4().hex[:6]}"
    password = await platform.register(device_id)
    channel = await post(
        platform,
        "/api/v1/notification-channels",
        {
            "name": f"hook-{device_id}",
            "type": "webhook",
            "config": {"url": receiver.url, "secret": SECRET},
        },
    )
    assert SECRET not in json.dumps(channel)
    rule = await post(
        platform,
        "/api/v1/alert-rules",
        {
            "name": "cold room too warm",
            "severity": "critical",
            "scope": {"device_id": device_id},
            "condition": {
                "type": "threshold",
                "metric": "temperature",
                "op": ">",
                "value": 8,
                "for_seconds": 3,
                "clear_value": 7,
            },
            "channels": [channel["id"]],
        },
    )
    device = await DeviceClient(device_id, password, platform.mqtt_port).connect()

    # Above 8 for longer than 3 s: one alert, one webhook.
    await publish_for(device, 9.5, 5)

    async def fired() -> dict[str, Any]:
        alerts = await alerts_of(platform, device_id)
        assert len(alerts) == 1 and alerts[0]["state"] == "firing", alerts
        mine = [d for d in receiver.deliveries if d.body.get("device_id") == device_id]
        assert len(mine) == 1, mine
        return alerts[0]

    alert = await eventually(fired, timeout=20)
    assert alert["rule_id"] == rule["id"] and alert["started_value"] == 9.5
    hook = next(d for d in receiver.deliveries if d.body.get("device_id") == device_id)
    assert hook.body["event"] == "firing" and hook.body["state"] == "firing"
    assert hook.body["alert_id"] == alert["id"] and hook.body["rule"]["id"] == rule["id"]
    assert hook.body["severity"] == "critical" and hook.body["value"] == 9.5
    assert hook.headers["x-fieldline-idempotency-key"]
    assert signature_holds(hook)

    # 7.5 is below the threshold but above the clear value: still firing, nothing sent.
    await publish_for(device, 7.5, 3)
    alerts = await alerts_of(platform, device_id)
    assert [a["state"] for a in alerts] == ["firing"]
    assert len([d for d in receiver.deliveries if d.body.get("device_id") == device_id]) == 1

    # At 6.5 it resolves, and says so.
    device.publish("telemetry", reading(6.5))

    async def resolved() -> None:
        alerts = await alerts_of(platform, device_id)
        assert [a["state"] for a in alerts] == ["resolved"], alerts
        assert alerts[0]["resolved_value"] == 6.5
        events = [
            d.body["event"] for d in receiver.deliveries if d.body.get("device_id") == device_id
        ]
        assert events == ["firing", "resolved"], events

    await eventually(resolved, timeout=20)


async def test_a_device_that_vanishes_fires_its_offline_rule(
    platform: Platform, receiver: WebhookReceiver
) -> None:
    device_id = f"gone-{uuid.uuid4().hex[:6]}"
    password = await platform.register(device_id)
    channel = await post(
        platform,
        "/api/v1/notification-channels",
        {
            "name": f"hook-{device_id}",
            "type": "webhook",
            "config": {"url": receiver.url, "secret": SECRET},
        },
    )
    await post(
        platform,
        "/api/v1/alert-rules",
        {
            "name": "device offline",
            "severity": "warning",
            "scope": {"device_id": device_id},
            "condition": {"type": "offline", "for_seconds": 2},
            "channels": [channel["id"]],
        },
    )
    device = await DeviceClient(device_id, password, platform.mqtt_port).connect()
    device.publish("telemetry", reading(5.0))
    device.publish("status", json.dumps({"status": "online"}))
    await eventually(lambda: _status_is(platform, device_id, "online"), timeout=15)
    # The device says it goes offline (as its last will would say for it).
    device.publish("status", json.dumps({"status": "offline"}))
    went = time.time()

    async def fired() -> Delivery:
        mine = [d for d in receiver.deliveries if d.body.get("device_id") == device_id]
        assert mine and mine[0].body["event"] == "firing", mine
        return mine[0]

    hook = await eventually(fired, timeout=20)
    # On time: for_seconds after it went offline, within a few seconds.
    assert 1.5 <= hook.arrived - went <= 8, hook.arrived - went


async def _status_is(platform: Platform, device_id: str, status: str) -> None:
    async with platform.http() as http:
        answer = await http.get(f"/api/v1/devices/{device_id}/status")
    assert answer.json()["status"] == status, answer.text
