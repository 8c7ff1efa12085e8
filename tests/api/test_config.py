"""Desired configuration through the API, delivered retained over a real (amqtt) broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from fieldline.broker.publisher import Publisher
from fieldline.domain.config import MAX_CONFIG_BYTES
from fieldline.ops.metrics import Metrics
from fieldline.worker.jobs import HOUSEKEEPING
from fieldline.worker.service import Worker
from tests.api.conftest import Api
from tests.broker.conftest import Probe, eventually

Subscribe = Callable[[str, str], Awaitable[Probe]]


@pytest.fixture
async def subscribed(api: Api) -> AsyncIterator[Subscribe]:
    """Connect as a device (its own credentials) subscribed to its config topic."""
    opened: list[Probe] = []

    async def subscribe(device_id: str, password: str) -> Probe:
        device = Probe()
        await device.connect(api.broker.endpoint, device_id, password)
        opened.append(device)
        await device.subscribe(f"devices/{device_id}/config")
        return device

    yield subscribe
    for device in opened:
        await device.close()


async def register(api: Api, headers: dict[str, str], device_id: str, **extra: Any) -> str:
    created = await api.http.post(
        "/api/v1/devices", headers=headers, json={"device_id": device_id, **extra}
    )
    assert created.status_code == 201, created.text
    return str(created.json()["mqtt"]["password"])


def configs(device: Probe) -> list[dict[str, Any]]:
    """What the device received on its config topic, in order; an empty payload (a cleared
    retained message) is not a configuration, and a repeat (QoS 1 allows them) is one."""
    received: list[dict[str, Any]] = []
    for _, payload in device.messages:
        message = orjson.loads(payload) if payload else None
        if message is not None and (not received or received[-1] != message):
            received.append(message)
    return received


async def put(api: Api, headers: dict[str, str], path: str, config: Any) -> dict[str, Any]:
    answer = await api.http.put(path, headers=headers, json={"config": config})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_subscribed_device_receives_its_configuration_and_a_late_one_too(
    api: Api, admin: dict[str, str], publisher: Publisher, subscribed: Subscribe
) -> None:
    password = await register(api, admin, "cfg-1")
    device = await subscribed("cfg-1", password)

    body = await put(api, admin, "/api/v1/devices/cfg-1/config", {"interval_s": 30})
    assert body == {
        "device_id": "cfg-1",
        "group_name": None,
        "desired": {"interval_s": 30},
        "group": None,
        "effective": {"interval_s": 30},
        "version": 1,
        "published_version": 1,
        "delivery_pending": False,
        "reported_version": None,
        "reported_at": None,
        "in_sync": False,
    }
    # Published before the answer: the broker acknowledged it already.
    assert await eventually(
        lambda: configs(device) == [{"version": 1, "config": {"interval_s": 30}}]
    )

    # Retained: a device that subscribes afterwards (after a reboot, say) gets it as well.
    late = await subscribed("cfg-1", password)
    assert await eventually(lambda: configs(late) == [{"version": 1, "config": {"interval_s": 30}}])
    fetched = await api.http.get("/api/v1/devices/cfg-1/config", headers=admin)
    assert fetched.status_code == 200 and fetched.json() == body


async def test_the_device_object_merges_deeply_over_the_group_object(
    api: Api, admin: dict[str, str], publisher: Publisher, subscribed: Subscribe
) -> None:
    assert (
        await api.http.post("/api/v1/groups", headers=admin, json={"name": "farm"})
    ).status_code == 201
    group = await put(
        api,
        admin,
        "/api/v1/groups/farm/config",
        {"sampling": {"interval_s": 60, "burst": 5}, "led": True, "tz": "UTC"},
    )
    assert (group["group"], group["version"], group["devices_versioned"]) == ("farm", 1, 0)

    # Registered into a configured group: the group's object is its configuration at once.
    password = await register(api, admin, "cfg-2", group="farm")
    device = await subscribed("cfg-2", password)
    first = {"sampling": {"interval_s": 60, "burst": 5}, "led": True, "tz": "UTC"}
    assert await eventually(lambda: configs(device) == [{"version": 1, "config": first}])

    body = await put(
        api, admin, "/api/v1/devices/cfg-2/config", {"sampling": {"interval_s": 10}, "led": None}
    )
    merged = {"sampling": {"interval_s": 10, "burst": 5}, "tz": "UTC"}
    assert (body["version"], body["effective"], body["group"]) == (2, merged, first)
    assert body["desired"] == {"sampling": {"interval_s": 10}, "led": None}

    # A group change the device overrides gives it no new version; one it does not, does.
    overridden = await put(
        api,
        admin,
        "/api/v1/groups/farm/config",
        {"sampling": {"interval_s": 120, "burst": 5}, "led": False, "tz": "UTC"},
    )
    assert (overridden["version"], overridden["devices_versioned"]) == (2, 0)
    changed = await put(
        api,
        admin,
        "/api/v1/groups/farm/config",
        {"sampling": {"interval_s": 120, "burst": 8}, "led": False, "tz": "UTC"},
    )
    assert (changed["devices_versioned"], changed["delivery_pending"]) == (1, 0)
    expected = {"sampling": {"interval_s": 10, "burst": 8}, "tz": "UTC"}
    assert await eventually(lambda: configs(device)[-1] == {"version": 3, "config": expected})
    assert [c["version"] for c in configs(device)] == [1, 2, 3]

    # PATCH merges into the device's own object; null removes a key there.
    patched = await api.http.patch(
        "/api/v1/devices/cfg-2/config",
        headers=admin,
        json={"config": {"sampling": None, "extra": [1, 2]}},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["desired"] == {"led": None, "extra": [1, 2]}
    assert patched.json()["effective"] == {
        "sampling": {"interval_s": 120, "burst": 8},
        "tz": "UTC",
        "extra": [1, 2],
    }
    group_now = await api.http.get("/api/v1/groups/farm/config", headers=admin)
    assert group_now.json()["config"]["sampling"] == {"interval_s": 120, "burst": 8}


async def test_versions_only_grow_and_history_says_who_set_what(
    api: Api, admin: dict[str, str]
) -> None:
    operator = await api.user("operator")
    await register(api, admin, "cfg-3")
    path = "/api/v1/devices/cfg-3/config"
    versions = [
        (await put(api, operator, path, config))["version"]
        for config in ({"a": 1}, {"a": 2}, {"a": 1}, {"a": 1})
    ]
    assert versions == [1, 2, 3, 3]  # the same object again changes nothing

    history = await api.http.get(f"{path}/history", headers=admin)
    assert history.status_code == 200
    items = history.json()["items"]
    assert [(i["version"], i["config"], i["scope"]) for i in items] == [
        (None, {"a": 1}, "device"),
        (3, {"a": 1}, "device"),
        (2, {"a": 2}, "device"),
        (1, {"a": 1}, "device"),
    ]
    assert all(i["actor"].startswith("user:operator-") for i in items)
    page = await api.http.get(f"{path}/history", headers=admin, params={"limit": 3})
    rest = await api.http.get(
        f"{path}/history", headers=admin, params={"limit": 3, "cursor": page.json()["next_cursor"]}
    )
    assert [i["version"] for i in rest.json()["items"]] == [1]
    assert rest.json()["next_cursor"] is None

    audit = await api.http.get(
        "/api/v1/audit", headers=admin, params={"target_id": "cfg-3", "action": "config.update"}
    )
    assert [e["detail"] for e in audit.json()["items"]] == [
        {"version": None},
        {"version": 3},
        {"version": 2},
        {"version": 1},
    ]


async def test_group_history_and_moving_between_groups(api: Api, admin: dict[str, str]) -> None:
    for name in ("north", "south"):
        await api.http.post("/api/v1/groups", headers=admin, json={"name": name})
    await put(api, admin, "/api/v1/groups/north/config", {"mode": "n"})
    await put(api, admin, "/api/v1/groups/south/config", {"mode": "s"})
    await register(api, admin, "cfg-4", group="north")
    await put(api, admin, "/api/v1/groups/north/config", {"mode": "N"})

    moved = await api.http.patch("/api/v1/devices/cfg-4", headers=admin, json={"group": "south"})
    assert moved.status_code == 200
    state = (await api.http.get("/api/v1/devices/cfg-4/config", headers=admin)).json()
    assert (state["group_name"], state["effective"], state["version"]) == (
        "south",
        {"mode": "s"},
        3,
    )
    history = (await api.http.get("/api/v1/devices/cfg-4/config/history", headers=admin)).json()
    assert [(i["scope"], i["target"], i["version"]) for i in history["items"]] == [
        ("membership", "south", 3),
        ("group", "north", 2),
        ("membership", "north", 1),
    ]
    group = (await api.http.get("/api/v1/groups/north/config/history", headers=admin)).json()
    assert [(i["version"], i["config"], i["devices_versioned"]) for i in group["items"]] == [
        (2, {"mode": "N"}, 1),
        (1, {"mode": "n"}, 0),
    ]


async def test_viewers_read_but_do_not_write(api: Api, admin: dict[str, str]) -> None:
    viewer = await api.user("viewer")
    await api.http.post("/api/v1/groups", headers=admin, json={"name": "site"})
    await register(api, admin, "cfg-5", group="site")
    for path in ("/api/v1/devices/cfg-5/config", "/api/v1/groups/site/config"):
        assert (await api.http.get(path, headers=viewer)).status_code == 200
        denied = await api.http.put(path, headers=viewer, json={"config": {"a": 1}})
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "forbidden"
    denied = await api.http.patch(
        "/api/v1/devices/cfg-5/config", headers=viewer, json={"config": {"a": 1}}
    )
    assert denied.status_code == 403
    history = await api.http.get("/api/v1/devices/cfg-5/config/history", headers=viewer)
    assert history.status_code == 200 and history.json()["items"] == []
    assert (await api.http.get("/api/v1/devices/cfg-5/config")).status_code == 401


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"config": [1, 2]}, "config"),
        ({"config": "x"}, "config"),
        ({}, "config"),
        ({"config": {"blob": "x" * MAX_CONFIG_BYTES}}, "limit"),
        ({"config": {"a": "nul\u0000"}}, "NUL"),
        ({"config": {"big": 2**70}}, "64 bits"),
        ({"config": {"deep": orjson.loads(b'{"a":' * 40 + b"1" + b"}" * 40)}}, "deeper"),
    ],
)
async def test_only_a_json_object_of_limited_size_is_a_configuration(
    api: Api, admin: dict[str, str], body: dict[str, Any], fragment: str
) -> None:
    await register(api, admin, "cfg-6")
    refused = await api.http.put("/api/v1/devices/cfg-6/config", headers=admin, json=body)
    assert refused.status_code == 422, refused.text
    assert fragment in refused.json()["error"]["message"]
    state = (await api.http.get("/api/v1/devices/cfg-6/config", headers=admin)).json()
    assert state["version"] == 0


async def test_non_finite_numbers_and_unknown_targets_are_refused(
    api: Api, admin: dict[str, str]
) -> None:
    await register(api, admin, "cfg-7")
    nan = await api.http.put(
        "/api/v1/devices/cfg-7/config",
        headers={**admin, "Content-Type": "application/json"},
        content=b'{"config": {"x": NaN}}',
    )
    assert nan.status_code == 422, nan.text
    for method, path in [
        ("GET", "/api/v1/devices/nobody/config"),
        ("PUT", "/api/v1/devices/nobody/config"),
        ("GET", "/api/v1/devices/nobody/config/history"),
        ("GET", "/api/v1/groups/nowhere/config"),
        ("PUT", "/api/v1/groups/nowhere/config"),
        ("GET", "/api/v1/groups/nowhere/config/history"),
    ]:
        answer = await api.http.request(method, path, headers=admin, json={"config": {"a": 1}})
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "not_found"


async def test_the_effective_configuration_is_size_capped_too(
    api: Api, admin: dict[str, str]
) -> None:
    await api.http.post("/api/v1/groups", headers=admin, json={"name": "big"})
    await register(api, admin, "cfg-8", group="big")
    half = "x" * (MAX_CONFIG_BYTES // 2)
    await put(api, admin, "/api/v1/devices/cfg-8/config", {"a": half})
    refused = await api.http.put(
        "/api/v1/groups/big/config", headers=admin, json={"config": {"b": half}}
    )
    assert refused.status_code == 422, refused.text
    assert "cfg-8" in refused.json()["error"]["message"]
    group = (await api.http.get("/api/v1/groups/big/config", headers=admin)).json()
    assert (group["version"], group["config"]) == (0, {})


async def test_an_undelivered_configuration_is_published_by_the_worker(
    api: Api, admin: dict[str, str], subscribed: Subscribe
) -> None:
    assert api.context.publisher is None  # no broker connection: nothing can be published
    await api.http.post("/api/v1/groups", headers=admin, json={"name": "depot"})
    password = await register(api, admin, "cfg-9", group="depot")
    body = await put(api, admin, "/api/v1/devices/cfg-9/config", {"a": 1})
    assert (body["version"], body["published_version"], body["delivery_pending"]) == (1, None, True)
    group = await put(api, admin, "/api/v1/groups/depot/config", {"b": 2})
    assert (group["devices_versioned"], group["delivery_pending"]) == (1, 1)
    device = await subscribed("cfg-9", password)

    publisher = Publisher(api.broker.endpoint, api.broker.service, role="worker-test")
    await publisher.start()
    try:
        worker = Worker(
            settings=api.context.settings, pool=api.pool, metrics=Metrics(), publisher=publisher
        )
        await worker.run_round(HOUSEKEEPING)
        # Only the newest version: the device never sees the one it missed.
        assert await eventually(
            lambda: configs(device) == [{"version": 2, "config": {"b": 2, "a": 1}}]
        )
        state = (await api.http.get("/api/v1/devices/cfg-9/config", headers=admin)).json()
        assert (state["published_version"], state["delivery_pending"]) == (2, False)
    finally:
        await publisher.stop()


async def test_a_starting_worker_republishes_what_the_broker_forgot(
    api: Api, admin: dict[str, str], publisher: Publisher, subscribed: Subscribe
) -> None:
    password = await register(api, admin, "cfg-10")
    await put(api, admin, "/api/v1/devices/cfg-10/config", {"a": 1})
    # As after a restart of the in-process broker: the retained message is gone.
    await publisher.publish("devices/cfg-10/config", b"", retain=True)
    worker = Worker(
        settings=api.context.settings, pool=api.pool, metrics=Metrics(), publisher=publisher
    )
    await worker.run_round(HOUSEKEEPING)
    late = await subscribed("cfg-10", password)
    assert await eventually(lambda: configs(late) == [{"version": 1, "config": {"a": 1}}])
    # Later rounds publish only what is pending.
    await publisher.publish("devices/cfg-10/config", b"", retain=True)
    await worker.run_round(HOUSEKEEPING)
    again = await subscribed("cfg-10", password)
    assert not await eventually(lambda: bool(configs(again)), within=0.5)


async def test_a_deleted_device_leaves_nothing_for_its_successor(
    api: Api, admin: dict[str, str], publisher: Publisher, subscribed: Subscribe
) -> None:
    await register(api, admin, "cfg-11")
    await put(api, admin, "/api/v1/devices/cfg-11/config", {"secret_site": "old"})
    assert (await api.http.delete("/api/v1/devices/cfg-11", headers=admin)).status_code == 204

    password = await register(api, admin, "cfg-11")
    state = (await api.http.get("/api/v1/devices/cfg-11/config", headers=admin)).json()
    assert (state["version"], state["effective"], state["in_sync"]) == (0, {}, True)
    history = await api.http.get("/api/v1/devices/cfg-11/config/history", headers=admin)
    assert history.json()["items"] == []
    device = await subscribed("cfg-11", password)
    assert not await eventually(lambda: bool(configs(device)), within=0.5)
