"""Rollouts on real PostgreSQL and a real broker: the worker's rounds (ota/engine.py) run
with the time they are given, and what devices say goes through ingest's own consumer
and writer, as an MQTT message on their topics would."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fieldline.broker.publisher import Publisher
from fieldline.domain.firmware import place, places_for_percentage
from fieldline.domain.topics import TopicScheme, Uplink
from fieldline.ingest.consumer import UplinkConsumer, batch_of, decode_limits
from fieldline.ota.engine import rollout_round
from fieldline.storage.writer import PartitionCache, write_batch
from tests.api.conftest import Api
from tests.ota.test_firmware_api import MODEL, register, upload

TOPICS = TopicScheme()


@dataclass
class Fleet:
    api: Api
    admin: dict[str, str]
    publisher: Publisher
    now: datetime

    async def round(self, after_seconds: float = 0.0) -> None:
        self.now += timedelta(seconds=after_seconds)
        async with self.api.pool.connection() as conn:
            await rollout_round(
                conn, publisher=self.publisher, topics=TOPICS, base_url="", now=self.now
            )

    async def say(self, device_id: str, kind: Uplink, document: dict[str, Any]) -> None:
        """What the device publishes on its `kind` topic, stored by ingest's writer."""
        consumer = UplinkConsumer(limits=decode_limits(65536, 300))
        message = consumer.consume(
            device_id,
            kind,
            TOPICS.uplink(device_id, kind),
            json.dumps(document).encode(),
            self.now,
        )
        async with self.api.pool.connection() as conn:
            await write_batch(conn, batch_of([message]), PartitionCache())

    async def rollout(self, rollout_id: int, **query: Any) -> dict[str, Any]:
        answer = await self.api.http.get(
            f"/api/v1/rollouts/{rollout_id}", headers=self.admin, params=query
        )
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def states(self, rollout_id: int) -> dict[str, str]:
        return {d["device_id"]: d["state"] for d in (await self.rollout(rollout_id))["devices"]}

    async def start(self, devices: list[str], **options: Any) -> int:
        body = {
            "firmware": {"device_model": MODEL, "version": "1.4.0"},
            "target": {"device_ids": devices},
            "percentage": 100,
            "max_per_minute": 6000,
            **options,
        }
        created = await self.api.http.post("/api/v1/rollouts", headers=self.admin, json=body)
        assert created.status_code == 201, created.text
        # The rollout's stage started at the database's now, which the time spent since
        # the fixture (registering devices on a busy machine) may have carried past the
        # fleet's clock: the schedule's seconds count from no earlier than that.
        self.now = max(self.now, datetime.now(UTC))
        return int(created.json()["id"])


@pytest.fixture
async def fleet(api: Api, admin: dict[str, str], publisher: Publisher) -> Fleet:
    assert (await upload(api, admin, "1.4.0")).status_code == 201
    return Fleet(api, admin, publisher, datetime.now(UTC) + timedelta(seconds=1))


async def devices_on(
    fleet: Fleet, count: int, version: str = "1.3.0", prefix: str = "dev"
) -> list[str]:
    names = [f"{prefix}-{i:03d}" for i in range(count)]
    for name in names:
        await register(fleet.api, fleet.admin, name, MODEL)
        await fleet.say(name, Uplink.STATUS, {"status": "online", "firmware_version": version})
    return names


def test_places_below_10_percent_are_below_50_percent() -> None:
    devices = [f"greenhouse-{i}" for i in range(5000)]
    at_10 = {d for d in devices if place(7, d) < places_for_percentage(10)}
    at_50 = {d for d in devices if place(7, d) < places_for_percentage(50)}
    assert at_10 < at_50
    assert 400 < len(at_10) < 600 and 2300 < len(at_50) < 2700  # shares of a fair hash


async def test_raising_the_percentage_keeps_every_device_already_in(fleet: Fleet) -> None:
    devices = await devices_on(fleet, 60)
    rollout_id = await fleet.start(devices, percentage=10)
    await fleet.round()
    at_10 = set(await fleet.states(rollout_id))
    raised = await fleet.api.http.patch(
        f"/api/v1/rollouts/{rollout_id}", headers=fleet.admin, json={"percentage": 50}
    )
    assert raised.status_code == 200, raised.text
    await fleet.round(1)
    at_50 = set(await fleet.states(rollout_id))
    assert at_10 < at_50
    assert at_50 == {d for d in devices if place(rollout_id, d) < places_for_percentage(50)}
    lowered = await fleet.api.http.patch(
        f"/api/v1/rollouts/{rollout_id}", headers=fleet.admin, json={"percentage": 20}
    )
    assert lowered.status_code == 409


async def test_a_canary_stage_then_percentages_on_their_schedule(fleet: Fleet) -> None:
    devices = await devices_on(fleet, 40)
    rollout_id = await fleet.start(
        devices,
        percentage=None,
        stages=[{"devices": 3}, {"percentage": 50, "after_seconds": 60}],
    )
    await fleet.round()
    canary = set(await fleet.states(rollout_id))
    assert len(canary) == 3
    assert canary == set(sorted(devices, key=lambda d: place(rollout_id, d))[:3])
    await fleet.round(30)
    assert set(await fleet.states(rollout_id)) == canary  # the next stage is not due
    await fleet.round(31)
    assert set(await fleet.states(rollout_id)) > canary
    assert (await fleet.rollout(rollout_id))["stage"] == 1


async def test_success_needs_the_new_version_and_a_settled_device(fleet: Fleet) -> None:
    (good, rolled, quiet, flaky) = await devices_on(fleet, 4)
    rollout_id = await fleet.start([good, rolled, quiet, flaky], settle_seconds=60)
    await fleet.round()
    assert set((await fleet.states(rollout_id)).values()) == {"notified"}
    for device in (good, rolled, quiet, flaky):
        for state in ("downloading", "downloaded", "installing", "installed"):
            await fleet.say(
                device,
                Uplink.OTA_PROGRESS,
                {"rollout_id": rollout_id, "version": "1.4.0", "state": state, "progress": 100},
            )
    assert set((await fleet.states(rollout_id)).values()) == {"installed"}
    await fleet.round(5)
    assert set((await fleet.states(rollout_id)).values()) == {"installed"}  # not success

    fleet.now += timedelta(seconds=5)  # the reboot
    for device in (good, quiet, flaky):
        await fleet.say(device, Uplink.STATUS, {"status": "online", "firmware_version": "1.4.0"})
    await fleet.say(rolled, Uplink.STATUS, {"status": "online", "firmware_version": "1.3.0"})
    await fleet.round(1)
    states = await fleet.states(rollout_id)
    assert states == {
        good: "verifying",
        quiet: "verifying",
        flaky: "verifying",
        rolled: "rolled_back",
    }

    # Some firmware says "installed" once it has booted: taken, and still verifying.
    await fleet.say(
        good,
        Uplink.OTA_PROGRESS,
        {"rollout_id": rollout_id, "version": "1.4.0", "state": "installed", "progress": 100},
    )
    assert (await fleet.states(rollout_id))[good] == "verifying"
    fleet.now += timedelta(seconds=20)
    await fleet.say(good, Uplink.HEARTBEAT, {})
    await fleet.say(flaky, Uplink.STATUS, {"status": "offline"})
    await fleet.round(1)
    await fleet.round(60)  # the settle time is over
    rollout = await fleet.rollout(rollout_id)
    by_device = {d["device_id"]: d for d in rollout["devices"]}
    assert {d: by_device[d]["state"] for d in by_device} == {
        good: "succeeded",
        quiet: "failed",
        flaky: "failed",
        rolled: "rolled_back",
    }
    assert "silent" in by_device[quiet]["error"]
    assert "offline" in by_device[flaky]["error"]
    assert "came back on 1.3.0" in by_device[rolled]["error"]
    rejected = await fleet.api.http.get("/api/v1/rejected", headers=fleet.admin)
    assert rejected.json()["items"] == []
    status = await fleet.api.http.get(f"/api/v1/devices/{good}/status", headers=fleet.admin)
    assert status.json()["pending_update"] is False
    history = await fleet.api.http.get(f"/api/v1/devices/{rolled}/updates", headers=fleet.admin)
    assert [(h["version"], h["from_version"], h["state"]) for h in history.json()["items"]] == [
        ("1.4.0", "1.3.0", "rolled_back")
    ]


async def test_failures_past_the_threshold_pause_the_rollout_and_no_one_else_is_told(
    fleet: Fleet,
) -> None:
    devices = await devices_on(fleet, 30)
    rollout_id = await fleet.start(
        devices, max_per_minute=300, abort={"min_finished": 4, "failure_percent": 25}
    )
    await fleet.round()  # 1 token at the start: one device told
    await fleet.round(1)  # 5 a second, at most 3 s of them at once
    told = [d for d, s in (await fleet.states(rollout_id)).items() if s == "notified"]
    assert 2 <= len(told) < 30
    for device in told[:2]:
        await fleet.say(
            device,
            Uplink.OTA_PROGRESS,
            {
                "rollout_id": rollout_id,
                "version": "1.4.0",
                "state": "failed",
                "error": "flash write error",
            },
        )
    await fleet.round(0.2)
    told_before = {d for d, s in (await fleet.states(rollout_id)).items() if s != "pending"}
    rollout = await fleet.rollout(rollout_id)
    if rollout["state"] == "running":  # fewer than 4 finished: it goes on until they have
        for device in sorted(told_before - set(told[:2]))[:2]:
            await fleet.say(
                device,
                Uplink.OTA_PROGRESS,
                {"rollout_id": rollout_id, "version": "1.4.0", "state": "failed", "error": "x"},
            )
        await fleet.round(0.2)
        rollout = await fleet.rollout(rollout_id)
    assert rollout["state"] == "paused"
    assert "finished devices failed" in rollout["pause_reason"]
    assert (rollout["auto_paused"], rollout["paused_by"]) == (True, None)
    told_at_pause = {d for d, s in (await fleet.states(rollout_id)).items() if s != "pending"}
    for _ in range(3):
        await fleet.round(1)
    assert {
        d for d, s in (await fleet.states(rollout_id)).items() if s != "pending"
    } == told_at_pause
    assert (await fleet.rollout(rollout_id))["counts"]["failed"] >= 2

    # The resume is stamped with the server's clock: let it pass this test's own.
    await asyncio.sleep(max((fleet.now - datetime.now(UTC)).total_seconds(), 0) + 0.1)
    resumed = await fleet.api.http.patch(
        f"/api/v1/rollouts/{rollout_id}", headers=fleet.admin, json={"action": "resume"}
    )
    assert resumed.status_code == 200, resumed.text
    fleet.now = datetime.now(UTC)
    await fleet.round(1)
    after = await fleet.rollout(rollout_id)
    assert after["state"] == "running"  # judged again only on devices finishing from now
    assert after["counts"]["notified"] > 0


async def test_a_device_that_never_finishes_times_out_and_counts_as_failed(fleet: Fleet) -> None:
    (device,) = await devices_on(fleet, 1)
    rollout_id = await fleet.start([device], device_timeout_seconds=600)
    await fleet.round()
    await fleet.round(599)
    assert (await fleet.states(rollout_id)) == {device: "notified"}
    await fleet.round(2)
    rollout = await fleet.rollout(rollout_id)
    assert rollout["counts"]["timed_out"] == 1
    assert rollout["state"] in ("paused", "completed")


async def test_the_pace_is_kept(fleet: Fleet) -> None:
    devices = await devices_on(fleet, 40)
    rollout_id = await fleet.start(devices, max_per_minute=60)
    told: list[int] = []
    for _ in range(20):
        before = sum(s != "pending" for s in (await fleet.states(rollout_id)).values())
        await fleet.round(1)
        after = sum(s != "pending" for s in (await fleet.states(rollout_id)).values())
        told.append(after - before)
    assert max(told) <= 3  # never more than the bucket holds (3 s of them)
    assert 19 <= sum(told) <= 22  # one a second, as asked


async def test_skips_and_downgrades(fleet: Fleet) -> None:
    (current,) = await devices_on(fleet, 1, version="1.4.0", prefix="current")
    (newer,) = await devices_on(fleet, 1, version="1.5.0", prefix="newer")
    rollout_id = await fleet.start([current, newer])
    await fleet.round()
    rollout = await fleet.rollout(rollout_id)
    assert {d["device_id"]: (d["state"], d["error"]) for d in rollout["devices"]} == {
        current: ("skipped", "already on 1.4.0"),
        newer: ("skipped", "on 1.5.0, newer than 1.4.0; no downgrades"),
    }
    assert rollout["state"] == "completed"


async def test_a_report_for_no_update_is_kept_as_rejected(fleet: Fleet) -> None:
    (device,) = await devices_on(fleet, 1)
    await fleet.say(
        device,
        Uplink.OTA_PROGRESS,
        {"rollout_id": 4242, "version": "1.4.0", "state": "installed"},
    )
    rejected = await fleet.api.http.get(
        "/api/v1/rejected", headers=fleet.admin, params={"device_id": device}
    )
    (kept,) = rejected.json()["items"]
    assert kept["reason"] == "no_update"
    assert "4242" in kept["detail"]


async def test_a_device_joining_a_targeted_group_joins_the_running_rollout(fleet: Fleet) -> None:
    api, admin = fleet.api, fleet.admin
    assert (
        await api.http.post("/api/v1/groups", headers=admin, json={"name": "farm"})
    ).status_code == 201
    (first, late) = await devices_on(fleet, 2)
    joined = await api.http.patch(f"/api/v1/devices/{first}", headers=admin, json={"group": "farm"})
    assert joined.status_code == 200, joined.text
    body = {
        "firmware": {"device_model": MODEL, "version": "1.4.0"},
        "target": {"groups": ["farm"]},
        "percentage": 100,
    }
    preview = await api.http.post("/api/v1/rollouts/preview", headers=admin, json=body)
    assert preview.json() == {"targeted": 1, "other_model": 0, "already_on_version": 0, "newer": 0}
    created = await api.http.post("/api/v1/rollouts", headers=admin, json=body)
    rollout_id = created.json()["id"]
    assert created.json()["target"]["groups"] == ["farm"]
    await fleet.round()
    assert set(await fleet.states(rollout_id)) == {first}

    moved = await api.http.patch(f"/api/v1/devices/{late}", headers=admin, json={"group": "farm"})
    assert moved.status_code == 200, moved.text
    await fleet.round(1)
    assert await fleet.states(rollout_id) == {first: "notified", late: "notified"}
    status = await api.http.get(f"/api/v1/devices/{late}/status", headers=admin)
    assert status.json()["pending_update"] is True

    cancelled = await api.http.patch(
        f"/api/v1/rollouts/{rollout_id}", headers=admin, json={"action": "cancel"}
    )
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    await fleet.round(1)
    assert set((await fleet.states(rollout_id)).values()) == {"cancelled"}
    async with api.pool.connection() as conn:  # the retained offers were taken back
        cursor = await conn.execute(
            "SELECT count(*) AS n FROM rollout_devices WHERE rollout_id = %s AND announced",
            (rollout_id,),
        )
        assert (await cursor.fetchone()) == {"n": 0}
    status = await api.http.get(f"/api/v1/devices/{late}/status", headers=admin)
    assert status.json()["pending_update"] is False
    again = await api.http.patch(
        f"/api/v1/rollouts/{rollout_id}", headers=admin, json={"action": "resume"}
    )
    assert again.status_code == 409


async def test_a_rollback_whose_status_was_stored_before_its_install_report(fleet: Fleet) -> None:
    """The report before the reboot and the status after it come on two connections."""
    (device,) = await devices_on(fleet, 1)
    rollout_id = await fleet.start([device])
    await fleet.round()
    progress = {"rollout_id": rollout_id, "version": "1.4.0", "progress": 100}
    await fleet.say(device, Uplink.OTA_PROGRESS, {**progress, "state": "installing"})
    fleet.now += timedelta(seconds=3)
    await fleet.say(device, Uplink.STATUS, {"status": "online", "firmware_version": "1.3.0"})
    fleet.now += timedelta(milliseconds=200)
    await fleet.say(device, Uplink.OTA_PROGRESS, {**progress, "state": "installed"})
    await fleet.round(10)
    assert await fleet.states(rollout_id) == {device: "installed"}  # it may yet come back
    await fleet.round(25)
    assert await fleet.states(rollout_id) == {device: "rolled_back"}


async def test_a_dropped_connection_while_flashing_is_no_rollback(fleet: Fleet) -> None:
    (device,) = await devices_on(fleet, 1)
    rollout_id = await fleet.start([device], settle_seconds=0)
    await fleet.round()
    progress = {"rollout_id": rollout_id, "version": "1.4.0", "progress": 100}
    await fleet.say(device, Uplink.OTA_PROGRESS, {**progress, "state": "installing"})
    fleet.now += timedelta(seconds=2)
    await fleet.say(device, Uplink.STATUS, {"status": "online", "firmware_version": "1.3.0"})
    await fleet.round(10)
    assert await fleet.states(rollout_id) == {device: "installing"}
    await fleet.say(device, Uplink.OTA_PROGRESS, {**progress, "state": "installed"})
    fleet.now += timedelta(seconds=2)
    await fleet.say(device, Uplink.STATUS, {"status": "online", "firmware_version": "1.4.0"})
    await fleet.round(1)
    await fleet.round(1)
    assert await fleet.states(rollout_id) == {device: "succeeded"}


async def test_a_pause_by_hand_names_who(fleet: Fleet) -> None:
    devices = await devices_on(fleet, 2)
    rollout_id = await fleet.start(devices)
    paused = await fleet.api.http.patch(
        f"/api/v1/rollouts/{rollout_id}", headers=fleet.admin, json={"action": "pause"}
    )
    body = paused.json()
    assert (body["state"], body["paused_by"], body["auto_paused"]) == ("paused", "admin", False)
    await fleet.round(5)
    assert await fleet.states(rollout_id) == {}  # paused before any device was let in
    viewer = await fleet.api.user("viewer")
    refused = await fleet.api.http.patch(
        f"/api/v1/rollouts/{rollout_id}", headers=viewer, json={"action": "resume"}
    )
    assert refused.status_code == 403
    audit = (await fleet.api.http.get("/api/v1/audit", headers=fleet.admin)).json()["items"]
    assert [e["action"] for e in audit if e["target_type"] == "rollout"][:2] == [
        "rollout.pause",
        "rollout.create",
    ]


async def test_a_last_will_arriving_after_the_reboot_is_not_a_failure(fleet: Fleet) -> None:
    """A device that reboots without disconnecting: the broker publishes the old session's
    will when the new one takes its place, which may be after the device said online."""
    (device,) = await devices_on(fleet, 1)
    rollout_id = await fleet.start([device], settle_seconds=30)
    await fleet.round()
    progress = {"rollout_id": rollout_id, "version": "1.4.0", "progress": 100}
    await fleet.say(device, Uplink.OTA_PROGRESS, {**progress, "state": "installed"})
    fleet.now += timedelta(seconds=3)
    await fleet.say(device, Uplink.STATUS, {"status": "online", "firmware_version": "1.4.0"})
    fleet.now += timedelta(milliseconds=300)
    await fleet.say(device, Uplink.STATUS, {"status": "offline"})  # the will, late
    await fleet.round(1)
    assert await fleet.states(rollout_id) == {device: "verifying"}
    fleet.now += timedelta(seconds=5)
    await fleet.say(device, Uplink.TELEMETRY, {"temperature": 21.5})  # it goes on reporting
    await fleet.round(30)
    assert await fleet.states(rollout_id) == {device: "succeeded"}
