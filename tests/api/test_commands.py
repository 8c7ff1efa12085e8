"""Commands to devices: the API, the worker's dispatcher and ingest's results, on real
PostgreSQL and a real (in-process amqtt) broker, with real MQTT clients as devices."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from fieldline.broker.publisher import Publisher
from fieldline.domain.topics import TopicScheme
from fieldline.downlink.commands import dispatch_round
from fieldline.ingest.batcher import Batcher
from fieldline.ingest.decode import DecodeLimits
from fieldline.ingest.service import IngestConsumer
from fieldline.ingest.writer import BatchWriter
from fieldline.ops.metrics import Metrics
from fieldline.storage.locks import JobLock, try_job_lock
from fieldline.worker.service import Worker
from tests.api.conftest import Api
from tests.api.test_auth_and_roles import assert_error
from tests.broker.conftest import Probe, eventually


@dataclass
class Ingest:
    consumer: IngestConsumer
    metrics: Metrics

    async def online(self, device_id: str) -> None:
        await self.consumer.handle(f"devices/{device_id}/status", b'{"status": "online"}')

    async def answer(self, device_id: str, document: Any) -> None:
        payload = document if isinstance(document, bytes) else orjson.dumps(document)
        await self.consumer.handle(f"devices/{device_id}/commands/result", payload)


@pytest.fixture
async def ingest(api: Api) -> AsyncIterator[Ingest]:
    """Ingest's consumer and one writer; `handle` returns once the outcome is committed."""
    metrics = Metrics()
    writer = BatchWriter(api.url)
    batcher = Batcher(write=writer, metrics=metrics, max_messages=100, max_delay=0.01)
    consumer = IngestConsumer(
        batcher=batcher,
        topics=TopicScheme(),
        limits=DecodeLimits(max_payload_bytes=65_536, max_future_skew=timedelta(minutes=5)),
        metrics=metrics,
    )
    writing = asyncio.create_task(batcher.run())
    yield Ingest(consumer, metrics)
    await batcher.drain()
    await writing
    await writer.close()


async def register(api: Api, headers: dict[str, str], device_id: str) -> str:
    created = await api.http.post("/api/v1/devices", headers=headers, json={"device_id": device_id})
    assert created.status_code == 201, created.text
    return str(created.json()["mqtt"]["password"])


async def device_client(api: Api, device_id: str, password: str) -> Probe:
    """The device, connected with its own credentials and subscribed to its commands."""
    probe = Probe()
    await probe.connect(api.broker.endpoint, device_id, password)
    await probe.subscribe(f"devices/{device_id}/commands")
    return probe


def received(probe: Probe) -> list[dict[str, Any]]:
    return [orjson.loads(payload) for _, payload in probe.messages]


async def send(api: Api, headers: dict[str, str], device_id: str, **body: Any) -> dict[str, Any]:
    answer = await api.http.post(
        f"/api/v1/devices/{device_id}/commands", headers=headers, json={"name": "reboot", **body}
    )
    assert answer.status_code == 201, answer.text
    command: dict[str, Any] = answer.json()
    return command


async def fetch(api: Api, headers: dict[str, str], command: dict[str, Any]) -> dict[str, Any]:
    answer = await api.http.get(
        f"/api/v1/devices/{command['device_id']}/commands/{command['command_id']}",
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def rejected(api: Api, headers: dict[str, str], device_id: str) -> list[dict[str, Any]]:
    answer = await api.http.get(
        "/api/v1/rejected", headers=headers, params={"device_id": device_id}
    )
    assert answer.status_code == 200, answer.text
    return list(reversed(answer.json()["items"]))  # oldest first


async def test_an_online_device_gets_a_command_at_once_and_its_answer_closes_it(
    api: Api, admin: dict[str, str], publisher: Publisher, ingest: Ingest
) -> None:
    password = await register(api, admin, "pump-1")
    device = await device_client(api, "pump-1", password)
    await ingest.online("pump-1")

    command = await send(api, admin, "pump-1", params={"delay": 5, "mode": "soft"})
    assert command["status"] == "sent"
    assert command["sent_at"] is not None and command["completed_at"] is None
    assert (command["device_id"], command["name"], command["created_by"]) == (
        "pump-1",
        "reboot",
        "user:admin",
    )
    created = datetime.fromisoformat(command["created_at"])
    assert datetime.fromisoformat(command["expires_at"]) - created == timedelta(hours=1)
    assert await eventually(lambda: len(device.messages) == 1)
    assert device.messages[0][0] == "devices/pump-1/commands"
    assert received(device) == [
        {
            "command_id": command["command_id"],
            "name": "reboot",
            "params": {"delay": 5, "mode": "soft"},
        }
    ]

    await ingest.answer(
        "pump-1",
        {"command_id": command["command_id"], "status": "succeeded", "result": {"uptime": 0}},
    )
    done = await fetch(api, admin, command)
    assert (done["status"], done["result"]) == ("succeeded", {"uptime": 0})
    assert done["completed_at"] is not None
    assert await rejected(api, admin, "pump-1") == []

    audit = await api.http.get(
        "/api/v1/audit", headers=admin, params={"action": "command.send", "target_id": "pump-1"}
    )
    (entry,) = audit.json()["items"]
    assert entry["actor"] == "user:admin"
    assert entry["detail"] == {"command_id": command["command_id"], "name": "reboot"}
    await device.close()


async def test_an_offline_devices_commands_wait_and_the_worker_sends_them_when_it_is_back(
    api: Api, admin: dict[str, str], publisher: Publisher, ingest: Ingest
) -> None:
    password = await register(api, admin, "valve-2")
    first = await send(api, admin, "valve-2", name="open", params={"percent": 40})
    second = await send(api, admin, "valve-2", name="close")
    for command in (first, second):
        assert (command["status"], command["sent_at"]) == ("pending", None)

    worker = Worker(
        settings=api.context.settings.model_copy(update={"worker_interval_seconds": 3600}),
        pool=api.pool,
        metrics=Metrics(),
        publisher=publisher,
    )
    stopping = asyncio.Event()
    running = asyncio.create_task(worker.run(stopping))
    try:
        # The device comes back: it subscribes, then says it is online.
        device = await device_client(api, "valve-2", password)
        await asyncio.sleep(0.2)
        assert device.messages == []  # nobody knows it is back yet
        await ingest.online("valve-2")
        assert await eventually(lambda: len(device.messages) == 2, within=10)
        assert [m["command_id"] for m in received(device)] == [
            first["command_id"],
            second["command_id"],
        ]
        assert received(device)[0] == {
            "command_id": first["command_id"],
            "name": "open",
            "params": {"percent": 40},
        }
        for command in (first, second):
            sent = await fetch(api, admin, command)
            assert sent["status"] == "sent" and sent["sent_at"] is not None

        # Sent once: later rounds find nothing more to send.
        await worker.run_job("command_dispatch")
        await asyncio.sleep(0.2)
        assert len(device.messages) == 2

        # A command sent now that the device is online goes out at once, after the others.
        third = await send(api, admin, "valve-2", name="status")
        assert third["status"] == "sent"
        assert await eventually(lambda: len(device.messages) == 3)
    finally:
        stopping.set()
        await asyncio.wait_for(running, timeout=10)
    await device.close()


async def test_an_online_devices_new_command_waits_behind_its_older_pending_ones(
    api: Api, admin: dict[str, str], publisher: Publisher, ingest: Ingest
) -> None:
    password = await register(api, admin, "fan-3")
    older = await send(api, admin, "fan-3", name="first")
    device = await device_client(api, "fan-3", password)
    await ingest.online("fan-3")
    newer = await send(api, admin, "fan-3", name="second")
    assert newer["status"] == "pending"  # the dispatcher sends both, in order
    worker = Worker(
        settings=api.context.settings, pool=api.pool, metrics=Metrics(), publisher=publisher
    )
    outcome = await worker.run_job("command_dispatch")
    assert outcome is not None and outcome.sent == 2
    assert await eventually(lambda: len(device.messages) == 2)
    assert [m["name"] for m in received(device)] == ["first", "second"]
    assert [m["command_id"] for m in received(device)] == [older["command_id"], newer["command_id"]]
    await device.close()


async def test_commands_not_answered_in_time_expire_and_late_answers_are_kept_as_rejected(
    api: Api, admin: dict[str, str], publisher: Publisher, ingest: Ingest
) -> None:
    password = await register(api, admin, "gate-4")
    other_password = await register(api, admin, "gate-5")
    device = await device_client(api, "gate-4", password)
    await ingest.online("gate-4")
    sent = await send(api, admin, "gate-4", timeout_seconds=0.5)
    pending = await send(api, admin, "gate-5", timeout_seconds=0.5)
    assert (sent["status"], pending["status"]) == ("sent", "pending")
    deadline = datetime.fromisoformat(pending["expires_at"])
    while datetime.now(UTC) <= deadline:
        await asyncio.sleep(0.05)

    worker = Worker(
        settings=api.context.settings, pool=api.pool, metrics=Metrics(), publisher=publisher
    )
    outcome = await worker.run_job("command_dispatch")
    assert outcome is not None and outcome.expired == 2
    for command in (sent, pending):
        expired = await fetch(api, admin, command)
        assert expired["status"] == "expired"
        assert expired["completed_at"] == expired["expires_at"]
        assert expired["result"] is None

    late = {"command_id": sent["command_id"], "status": "succeeded", "result": "done"}
    await ingest.answer("gate-4", late)
    assert (await fetch(api, admin, sent))["status"] == "expired"
    (kept,) = await rejected(api, admin, "gate-4")
    assert kept["reason"] == "command_closed"
    assert "already expired" in kept["detail"]
    assert kept["topic"] == "devices/gate-4/commands/result"
    assert orjson.loads(base64.b64decode(kept["payload_base64"])) == late
    sample = ingest.metrics.registry.get_sample_value
    assert sample("fieldline_messages_rejected_total", {"reason": "command_closed"}) == 1

    # An expired command is never sent, even when its device comes online.
    other = await device_client(api, "gate-5", other_password)
    await ingest.online("gate-5")
    await worker.run_job("command_dispatch")
    await asyncio.sleep(0.2)
    assert other.messages == []
    await device.close()
    await other.close()


async def test_results_are_checked_and_whatever_answers_no_open_command_is_kept(
    api: Api, admin: dict[str, str], ingest: Ingest
) -> None:
    await register(api, admin, "tank-6")
    await register(api, admin, "tank-7")
    # No publisher: both stay pending; a device may still answer a pending command
    # (it got it from a persistent session, say).
    mine = await send(api, admin, "tank-6", name="calibrate")
    theirs = await send(api, admin, "tank-7", name="calibrate")
    assert mine["status"] == theirs["status"] == "pending"

    bad = {
        b"not json": "invalid_json",
        b'["a", "list"]': "invalid_payload",
        b'{"status": "succeeded"}': "invalid_payload",
        b'{"command_id": "nope", "status": "succeeded"}': "invalid_payload",
        orjson.dumps({"command_id": mine["command_id"], "status": "done"}): "invalid_payload",
        orjson.dumps(
            {"command_id": mine["command_id"], "status": "failed", "device_id": "tank-7"}
        ): ("device_mismatch"),
        (
            b'{"command_id": "' + mine["command_id"].encode() + b'", "status": "failed", '
            b'"result": NaN}'
        ): "non_finite_value",
        (
            b'{"command_id": "' + mine["command_id"].encode() + b'", "status": "failed", '
            b'"result": "a\\u0000b"}'
        ): "invalid_payload",
        orjson.dumps(
            {"command_id": "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f", "status": "succeeded"}
        ): "unknown_command",
        orjson.dumps({"command_id": theirs["command_id"], "status": "succeeded"}): (
            "unknown_command"
        ),
    }
    for payload in bad:
        await ingest.answer("tank-6", payload)
    kept = await rejected(api, admin, "tank-6")
    assert {base64.b64decode(r["payload_base64"]): r["reason"] for r in kept} == bad
    assert all(r["topic"] == "devices/tank-6/commands/result" for r in kept)
    unknown = [r for r in kept if r["reason"] == "unknown_command"]
    assert unknown[-1]["detail"] == f"device 'tank-6' has no command {theirs['command_id']}"
    # Nothing above touched either command.
    assert (await fetch(api, admin, mine))["status"] == "pending"
    assert (await fetch(api, admin, theirs))["status"] == "pending"

    answer = {"command_id": mine["command_id"], "status": "failed", "result": {"error": "busy"}}
    await ingest.answer("tank-6", answer)
    await ingest.answer("tank-6", answer)  # QoS 1 delivered it twice: harmless
    closed = await fetch(api, admin, mine)
    assert (closed["status"], closed["result"]) == ("failed", {"error": "busy"})
    assert len(await rejected(api, admin, "tank-6")) == len(bad)
    # A different answer to a closed command is kept, not applied.
    await ingest.answer("tank-6", {**answer, "status": "succeeded"})
    assert (await fetch(api, admin, mine))["status"] == "failed"
    newest = (await rejected(api, admin, "tank-6"))[-1]
    assert (newest["reason"], newest["detail"]) == (
        "command_closed",
        f"command {mine['command_id']} is already failed; this result was not kept on it",
    )
    sample = ingest.metrics.registry.get_sample_value
    assert sample("fieldline_messages_rejected_total", {"reason": "unknown_command"}) == 2


async def test_two_answers_in_one_batch_close_the_command_once(
    api: Api, admin: dict[str, str], ingest: Ingest
) -> None:
    await register(api, admin, "lamp-8")
    command = await send(api, admin, "lamp-8")
    answer = {"command_id": command["command_id"], "status": "succeeded", "result": 1}
    await asyncio.gather(
        ingest.answer("lamp-8", answer),
        ingest.answer("lamp-8", answer),
        ingest.answer("lamp-8", {**answer, "result": 2}),
    )
    done = await fetch(api, admin, command)
    assert (done["status"], done["result"]) == ("succeeded", 1)
    assert [r["reason"] for r in await rejected(api, admin, "lamp-8")] == ["command_closed"]


async def test_a_command_the_broker_does_not_acknowledge_stays_pending(
    api: Api, admin: dict[str, str], publisher: Publisher, ingest: Ingest
) -> None:
    await register(api, admin, "horn-9")
    await ingest.online("horn-9")
    await publisher.stop()  # the broker is out of reach
    command = await send(api, admin, "horn-9")
    assert command["status"] == "pending"
    assert (await fetch(api, admin, command))["status"] == "pending"


async def test_listing_is_paged_newest_first_and_filters_by_status(
    api: Api, admin: dict[str, str], ingest: Ingest
) -> None:
    await register(api, admin, "list-1")
    made = [await send(api, admin, "list-1", name=f"c{i}") for i in range(3)]
    await ingest.answer("list-1", {"command_id": made[0]["command_id"], "status": "succeeded"})
    url = "/api/v1/devices/list-1/commands"
    page = (await api.http.get(url, headers=admin, params={"limit": 2})).json()
    assert [c["name"] for c in page["items"]] == ["c2", "c1"]
    rest = (
        await api.http.get(url, headers=admin, params={"limit": 2, "cursor": page["next_cursor"]})
    ).json()
    assert [c["name"] for c in rest["items"]] == ["c0"] and rest["next_cursor"] is None
    assert rest["items"][0]["status"] == "succeeded" and rest["items"][0]["result"] is None
    pending = (await api.http.get(url, headers=admin, params={"status": "pending"})).json()
    assert [c["name"] for c in pending["items"]] == ["c2", "c1"]
    succeeded = (await api.http.get(url, headers=admin, params={"status": "succeeded"})).json()
    assert [c["command_id"] for c in succeeded["items"]] == [made[0]["command_id"]]
    assert_error(
        await api.http.get(url, headers=admin, params={"status": "done"}), 422, "validation_error"
    )
    assert_error(
        await api.http.get(url, headers=admin, params={"cursor": "junk"}), 400, "bad_request"
    )


async def test_bad_requests_unknown_and_disabled_devices(api: Api, admin: dict[str, str]) -> None:
    await register(api, admin, "relay-1")
    url = "/api/v1/devices/relay-1/commands"
    for body in (
        {},
        {"name": ""},
        {"name": "x", "params": [1, 2]},
        {"name": "x", "params": None},
        {"name": "x", "timeout_seconds": 0},
        {"name": "x", "timeout_seconds": -5},
        {"name": "x", "timeout_seconds": 3601},
        {"name": "x", "parmas": {}},
        {"name": "x", "params": {"blob": "a" * 70_000}},
        {"name": "x", "params": {"text": "a\u0000b"}},
    ):
        assert_error(await api.http.post(url, headers=admin, json=body), 422, "validation_error")
    for raw in (b'{"name": "x", "params": {"v": NaN}}', b"not json"):
        response = await api.http.post(
            url, headers={**admin, "Content-Type": "application/json"}, content=raw
        )
        assert_error(response, 422, "validation_error")
    assert (await api.http.get(url, headers=admin)).json()["items"] == []

    assert_error(
        await api.http.post("/api/v1/devices/ghost/commands", headers=admin, json={"name": "x"}),
        404,
        "not_found",
    )
    assert_error(
        await api.http.get("/api/v1/devices/ghost/commands", headers=admin), 404, "not_found"
    )
    command = await send(api, admin, "relay-1")
    await register(api, admin, "relay-2")
    for path in (
        f"/api/v1/devices/relay-2/commands/{command['command_id']}",  # another device's
        f"/api/v1/devices/ghost/commands/{command['command_id']}",
        "/api/v1/devices/relay-1/commands/7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f",
    ):
        assert_error(await api.http.get(path, headers=admin), 404, "not_found")
    assert_error(
        await api.http.get("/api/v1/devices/relay-1/commands/not-a-uuid", headers=admin),
        422,
        "validation_error",
    )

    patched = await api.http.patch(
        "/api/v1/devices/relay-1", headers=admin, json={"enabled": False}
    )
    assert patched.status_code == 200
    assert_error(await api.http.post(url, headers=admin, json={"name": "x"}), 409, "conflict")
    # Deleting a device deletes its commands with it.
    assert (await api.http.delete("/api/v1/devices/relay-1", headers=admin)).status_code == 204
    async with api.pool.connection() as conn:
        left = await (await conn.execute("SELECT count(*) AS n FROM commands")).fetchone()
    assert left == {"n": 0}


async def test_operators_send_and_viewers_only_read(api: Api, admin: dict[str, str]) -> None:
    await register(api, admin, "role-1")
    url = "/api/v1/devices/role-1/commands"
    viewer = await api.user("viewer")
    operator = await api.user("operator")
    assert_error(await api.http.post(url, headers=viewer, json={"name": "x"}), 403, "forbidden")
    command = await send(api, operator, "role-1")
    assert command["created_by"].startswith("user:operator-")
    assert (await api.http.get(url, headers=viewer)).status_code == 200
    assert (await fetch(api, viewer, command))["command_id"] == command["command_id"]
    assert_error(await api.http.get(url), 401, "unauthorized")


async def test_one_dispatcher_at_a_time(api: Api, admin: dict[str, str]) -> None:
    await register(api, admin, "lock-1")
    await send(api, admin, "lock-1", timeout_seconds=0.1)
    await asyncio.sleep(0.2)
    online_since = datetime.now(UTC) - timedelta(minutes=5)
    async with api.pool.connection() as holder, api.pool.connection() as other:
        async with holder.transaction():
            assert await try_job_lock(holder, JobLock.COMMAND_DISPATCH)
            skipped = await dispatch_round(
                other, publisher=None, topics=TopicScheme(), online_since=online_since
            )
            assert skipped is None
        outcome = await dispatch_round(
            other, publisher=None, topics=TopicScheme(), online_since=online_since
        )
    assert outcome is not None and (outcome.expired, outcome.sent) == (1, 0)


async def test_a_sent_command_goes_again_when_the_device_reconnects_unanswered(
    api: Api, admin: dict[str, str], publisher: Publisher, ingest: Ingest
) -> None:
    """A device on a clean session that dropped just as a command was sent never got it;
    its next `online` status makes the worker send it again (devices answer by command_id)."""
    password = await register(api, admin, "valve-9")
    await ingest.online("valve-9")
    lost = await send(api, admin, "valve-9", name="open")
    assert lost["status"] == "sent"  # the broker took it; nobody was subscribed

    worker = Worker(
        settings=api.context.settings, pool=api.pool, metrics=Metrics(), publisher=publisher
    )
    await worker.run_job("command_dispatch")
    device = await device_client(api, "valve-9", password)
    await asyncio.sleep(0.2)
    assert device.messages == []  # no reconnect seen yet: nothing is re-sent
    await ingest.online("valve-9")
    await worker.run_job("command_dispatch")
    assert await eventually(lambda: len(device.messages) == 1, within=10)
    assert received(device)[0]["command_id"] == lost["command_id"]
    await ingest.answer(
        "valve-9", {"command_id": lost["command_id"], "status": "succeeded", "result": None}
    )
    assert (await fetch(api, admin, lost))["status"] == "succeeded"
    # Answered: a further reconnect sends nothing.
    await ingest.online("valve-9")
    await worker.run_job("command_dispatch")
    await asyncio.sleep(0.2)
    assert len(device.messages) == 1
    await device.close()
