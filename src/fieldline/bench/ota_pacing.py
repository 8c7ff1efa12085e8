"""Is a rollout's pace held? Devices told per second and per minute against `max_per_minute`.

A rollout is created through the API for a whole group at 100%, `fieldline worker`
tells its devices, and after the measured window the rollout is paused (no device is
told after that) and then cancelled (its retained messages cleared) before the next
rate. What was told is read from `rollout_devices.notified_at`, the time of the round
that told each device; a subscriber to every device's `ota` topic counts the messages
the broker delivered, with their arrival times, as a check that "told" means sent.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import gmqtt
import httpx
import orjson
import psycopg
from gmqtt.mqtt.constants import MQTTv311

from fieldline.bench.report import percentile
from fieldline.bench.stack import READER, Stack
from fieldline.broker.base import BrokerEndpoint
from fieldline.broker.control import DynsecControl
from fieldline.ota.engine import BURST_SECONDS

OTA_TOPIC = "devices/+/ota"
CLEAR_TIMEOUT_S = 120.0
ARRIVAL_WAIT_S = 10.0
# The engine's bucket holds BURST_SECONDS of notifications: the most any window of W
# seconds may tell is (W + BURST_SECONDS) x the rate.


@dataclass
class OtaListener:
    """One MQTT connection subscribed to every device's `ota` topic: the announcements
    that arrive, by rollout, as wall-clock arrival times."""

    # rollout id -> device id -> wall-clock arrival (time.time())
    arrivals: dict[int, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    cleared: int = 0  # empty retained messages: an update over, or its rollout cancelled
    _client: Any = None

    async def start(self, stack: Stack) -> None:
        await _allow_reader(stack)
        subscribed = asyncio.Event()
        client = gmqtt.Client(f"bench-ota-{time.time_ns()}", clean_session=True)
        client.set_auth_credentials(READER, stack.reader_password)
        client.on_message = self._on_message
        client.on_subscribe = lambda *_: subscribed.set()
        await client.connect("127.0.0.1", stack.mqtt_port, version=MQTTv311, keepalive=60)
        client.subscribe(OTA_TOPIC, qos=1)
        await asyncio.wait_for(subscribed.wait(), 30)
        self._client = client

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.disconnect()

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        if not payload:
            self.cleared += 1
        else:
            device_id = topic.split("/")[1]
            self.arrivals[int(orjson.loads(payload)["rollout_id"])][device_id] = time.time()
        return 0  # PUBACK


async def _allow_reader(stack: Stack) -> None:
    control = DynsecControl.at(
        BrokerEndpoint(host="127.0.0.1", port=stack.mqtt_port),
        username=stack.broker.admin_username,
        password=stack.broker.admin_password,
    )
    await control.connect()
    try:
        await control.execute(
            [
                {
                    "command": "addRoleACL",
                    "rolename": READER,
                    "acltype": "subscribePattern",
                    "topic": OTA_TOPIC,
                    "allow": True,
                }
            ]
        )
    finally:
        await control.close()


def most_within(times: list[float], width: float) -> int:
    """The most of `times` (sorted ascending) in any window [t, t + width)."""
    most = first = 0
    for last, at in enumerate(times):
        while at - times[first] >= width:
            first += 1
        most = max(most, last - first + 1)
    return most


@dataclass(frozen=True, slots=True)
class Pace:
    """One rate's outcome, times in seconds from the rollout's creation."""

    per_minute: int
    window_s: float  # creation to pause
    told: int
    received: int  # announcements the subscriber got for this rollout
    most_in_1s: int
    most_in_60s: int
    rounds: int  # rounds that told someone (their devices share one notified_at)
    largest_round: int
    round_gap_p50_ms: float
    round_gap_max_ms: float
    first_told_s: float | None
    most_arrived_in_1s: int
    # notified_at (its round's start) to the announcement's arrival at the subscriber
    lag_p50_ms: float
    lag_max_ms: float
    clear_s: float  # cancel until every retained announcement was cleared
    per_second: list[int]  # devices told in each second of the window
    usage: dict[str, dict[str, float]]

    @property
    def achieved_per_minute(self) -> float:
        return 60.0 * self.told / self.window_s

    @property
    def allowed_in_1s(self) -> float:
        return self.per_minute / 60.0 * (1 + BURST_SECONDS)

    @property
    def allowed_in_60s(self) -> float:
        return self.per_minute / 60.0 * (min(60.0, self.window_s) + BURST_SECONDS)


async def pace(
    stack: Stack,
    headers: dict[str, str],
    listener: OtaListener,
    *,
    group: str,
    model: str,
    version: str,
    per_minute: int,
    duration: float,
) -> Pace:
    """Roll `version` out to `group` at `per_minute` for `duration` seconds; pause, cancel."""
    body = {
        "firmware": {"device_model": model, "version": version},
        "target": {"groups": [group]},
        "percentage": 100,
        "max_per_minute": per_minute,
        "device_timeout_seconds": 86_400,  # no device times out while it is measured
        "settle_seconds": 0,
    }
    async with httpx.AsyncClient(
        base_url=stack.deployment.api_url, headers=headers, timeout=60
    ) as http:
        stack.usage.start()
        created = await http.post("/api/v1/rollouts", json=body)
        if created.status_code != 201:
            raise RuntimeError(f"creating the rollout failed: {created.status_code} {created.text}")
        rollout_id = int(created.json()["id"])
        await asyncio.sleep(duration)
        await _change(http, rollout_id, "pause")
        stack.usage.stop()
        usage = stack.usage.summary()
        began, paused, told_at = await _told(stack.database_url, rollout_id)
        await _wait_arrivals(listener, rollout_id, len(told_at))
        cancelled = time.monotonic()
        await _change(http, rollout_id, "cancel")
        await _wait_cleared(stack.database_url, rollout_id)
        clear_s = time.monotonic() - cancelled
    window = (paused - began).total_seconds()
    told = sorted(told_at.values())
    offsets = [(at - began).total_seconds() for at in told]
    sizes = Counter(offsets)
    rounds = sorted(sizes)
    gaps = sorted(1000 * (b - a) for a, b in itertools.pairwise(rounds))
    per_second = [0] * (int(window) + 1)
    for at in offsets:
        per_second[min(int(at), len(per_second) - 1)] += 1
    received = listener.arrivals.get(rollout_id, {})
    arrived = sorted(received.values())
    lags = sorted(
        1000 * (at - told_at[device].timestamp())
        for device, at in received.items()
        if device in told_at
    )
    return Pace(
        per_minute=per_minute,
        window_s=window,
        told=len(told),
        received=len(arrived),
        most_in_1s=most_within(offsets, 1.0),
        most_in_60s=most_within(offsets, 60.0),
        rounds=len(rounds),
        largest_round=max(sizes.values(), default=0),
        round_gap_p50_ms=percentile(gaps, 0.5),
        round_gap_max_ms=max(gaps, default=float("nan")),
        first_told_s=rounds[0] if rounds else None,
        most_arrived_in_1s=most_within(arrived, 1.0),
        lag_p50_ms=percentile(lags, 0.5),
        lag_max_ms=max(lags, default=float("nan")),
        clear_s=clear_s,
        per_second=per_second,
        usage=usage,
    )


async def _change(http: httpx.AsyncClient, rollout_id: int, action: str) -> None:
    answer = await http.patch(f"/api/v1/rollouts/{rollout_id}", json={"action": action})
    if answer.status_code != 200:
        raise RuntimeError(f"{action} of rollout {rollout_id}: {answer.status_code} {answer.text}")


async def _told(
    database_url: str, rollout_id: int
) -> tuple[datetime, datetime, dict[str, datetime]]:
    """The rollout's creation and pause, and when each device was told."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT created_at, paused_at FROM rollouts WHERE id = %s", (rollout_id,)
        )
        row = await cursor.fetchone()
        assert row is not None
        assert row[1] is not None, f"rollout {rollout_id} was not paused"
        cursor = await conn.execute(
            "SELECT device_id, notified_at FROM rollout_devices WHERE rollout_id = %s"
            " AND notified_at IS NOT NULL",
            (rollout_id,),
        )
        told: dict[str, datetime] = dict(await cursor.fetchall())
    return row[0], row[1], told


async def _wait_arrivals(listener: OtaListener, rollout_id: int, told: int) -> None:
    deadline = time.monotonic() + ARRIVAL_WAIT_S
    while len(listener.arrivals.get(rollout_id, {})) < told and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def _wait_cleared(database_url: str, rollout_id: int) -> None:
    """Until the worker has cleared every retained announcement of the cancelled rollout."""
    deadline = time.monotonic() + CLEAR_TIMEOUT_S
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            cursor = await conn.execute(
                "SELECT count(*) FROM rollout_devices WHERE rollout_id = %s AND announced",
                (rollout_id,),
            )
            (left,) = await cursor.fetchone() or (0,)
            if not left:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{left} announcements of rollout {rollout_id} not cleared")
            await asyncio.sleep(0.2)
