"""Groups renamed, described, given a time zone and deleted over the HTTP API: what follows
a rename, what a deletion does to the group's devices and their configuration (delivered
over a real broker), refusals as JSON, roles and the audit log."""

from __future__ import annotations

from typing import Any

from fieldline.broker.publisher import Publisher
from tests.api.conftest import Api
from tests.api.test_alert_rules import RULES, rule
from tests.api.test_auth_and_roles import assert_error
from tests.api.test_config import (
    Subscribe,
    configs,
    put,
    register,
    subscribed,  # noqa: F401 (a fixture)
)
from tests.api.test_provisioning import new_key
from tests.api.test_silences import later
from tests.broker.conftest import eventually

GROUPS = "/api/v1/groups"


async def create(api: Api, headers: dict[str, str], name: str, **fields: Any) -> dict[str, Any]:
    created = await api.http.post(GROUPS, headers=headers, json={"name": name, **fields})
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


async def audit(api: Api, admin: dict[str, str], action: str) -> list[dict[str, Any]]:
    answer = await api.http.get("/api/v1/audit", headers=admin, params={"action": action})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def test_one_group_with_its_device_count_and_time_zone(
    api: Api, admin: dict[str, str]
) -> None:
    viewer = await api.user("viewer")
    created = await create(api, admin, "north farm", timezone="Europe/Berlin")
    assert created["timezone"] == "Europe/Berlin"
    for device_id in ("n-1", "n-2"):
        await register(api, admin, device_id, group="north farm")
    await register(api, admin, "loose")

    one = await api.http.get(f"{GROUPS}/north farm", headers=viewer)
    assert one.status_code == 200, one.text
    body = one.json()
    assert (body["name"], body["timezone"], body["device_count"]) == (
        "north farm",
        "Europe/Berlin",
        2,
    )
    listed = (await api.http.get(GROUPS, headers=viewer)).json()["items"]
    assert [(g["name"], g["timezone"]) for g in listed] == [("north farm", "Europe/Berlin")]
    assert_error(await api.http.get(f"{GROUPS}/nowhere", headers=viewer), 404, "not_found")


async def test_description_and_time_zone_change_and_unknown_zones_are_refused(
    api: Api, admin: dict[str, str]
) -> None:
    operator = await api.user("operator")
    await create(api, admin, "depot")
    path = f"{GROUPS}/depot"

    changed = await api.http.patch(
        path, headers=operator, json={"description": "Bus depot", "timezone": "America/Chicago"}
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["description"], changed.json()["timezone"]) == (
        "Bus depot",
        "America/Chicago",
    )
    for zone in ("Mars/Olympus", "europe/berlin", "", "../../etc/passwd", "Europe/Berlin "):
        refused = await api.http.patch(path, headers=operator, json={"timezone": zone})
        assert_error(refused, 422, "validation_error")
    for name in ("", None):
        assert_error(
            await api.http.patch(path, headers=operator, json={"name": name}),
            422,
            "validation_error",
        )
    assert_error(
        await api.http.patch(path, headers=operator, json={"description": None}),
        422,
        "validation_error",
    )
    assert_error(
        await api.http.post(GROUPS, headers=operator, json={"name": "x", "timezone": "Nowhere"}),
        422,
        "validation_error",
    )

    # Only what is sent changes; null removes the time zone.
    cleared = await api.http.patch(path, headers=operator, json={"timezone": None})
    assert (cleared.json()["description"], cleared.json()["timezone"]) == ("Bus depot", None)
    stored = (await api.http.get(path, headers=operator)).json()
    assert (stored["description"], stored["timezone"]) == ("Bus depot", None)
    assert_error(
        await api.http.patch(f"{GROUPS}/absent", headers=operator, json={"description": "x"}),
        404,
        "not_found",
    )
    entries = await audit(api, admin, "group.update")
    assert [e["detail"] for e in entries] == [
        {"changes": ["timezone"]},
        {"changes": ["description", "timezone"]},
    ]
    assert all(e["actor"].startswith("user:operator-") for e in entries)


async def test_a_renamed_group_keeps_its_devices_configuration_keys_rules_and_silences(
    api: Api,
    admin: dict[str, str],
    publisher: Publisher,
    subscribed: Subscribe,  # noqa: F811 (the fixture imported above)
) -> None:
    await create(api, admin, "farm", description="pumps")
    await put(api, admin, f"{GROUPS}/farm/config", {"interval_s": 60})
    password = await register(api, admin, "f-1", group="farm")
    device = await subscribed("f-1", password)
    assert await eventually(
        lambda: configs(device) == [{"version": 1, "config": {"interval_s": 60}}]
    )
    key_id, _ = await new_key(api, admin, group="farm")
    rule_id = (
        await api.http.post(RULES, headers=admin, json=rule(scope={"group": "farm"}))
    ).json()["id"]
    silence = await api.http.post(
        "/api/v1/silences",
        headers=admin,
        json={"group": "farm", "ends_at": later(hours=1), "reason": "harvest"},
    )
    assert silence.status_code == 201, silence.text
    await create(api, admin, "taken")

    assert_error(
        await api.http.patch(f"{GROUPS}/farm", headers=admin, json={"name": "taken"}),
        409,
        "conflict",
    )
    renamed = await api.http.patch(f"{GROUPS}/farm", headers=admin, json={"name": "south farm"})
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["description"]) == ("south farm", "pumps")

    assert_error(await api.http.get(f"{GROUPS}/farm", headers=admin), 404, "not_found")
    assert (await api.http.get(f"{GROUPS}/south farm", headers=admin)).json()["device_count"] == 1
    assert (await api.http.get("/api/v1/devices/f-1", headers=admin)).json()[
        "group"
    ] == "south farm"
    group_config = (await api.http.get(f"{GROUPS}/south farm/config", headers=admin)).json()
    assert (group_config["config"], group_config["version"]) == ({"interval_s": 60}, 1)
    history = (await api.http.get(f"{GROUPS}/south farm/config/history", headers=admin)).json()
    assert [(c["version"], c["config"]) for c in history["items"]] == [(1, {"interval_s": 60})]
    # What the device receives did not change: no new version, nothing published.
    device_config = (await api.http.get("/api/v1/devices/f-1/config", headers=admin)).json()
    assert (device_config["version"], device_config["group_name"]) == (1, "south farm")
    assert configs(device) == [{"version": 1, "config": {"interval_s": 60}}]

    keys = (await api.http.get("/api/v1/provisioning-keys", headers=admin)).json()["items"]
    assert [k["group"] for k in keys if k["key_id"] == key_id] == ["south farm"]
    watched = (await api.http.get(f"{RULES}/{rule_id}", headers=admin)).json()
    assert watched["scope"] == {"group": "south farm"}
    silences = (await api.http.get("/api/v1/silences", headers=admin)).json()["items"]
    assert [s["group"] for s in silences] == ["south farm"]
    (entry,) = await audit(api, admin, "group.update")
    assert (entry["target_id"], entry["detail"]) == (
        "south farm",
        {"changes": ["name"], "renamed_from": "farm"},
    )


async def test_a_deleted_group_leaves_its_devices_without_its_configuration(
    api: Api,
    admin: dict[str, str],
    publisher: Publisher,
    subscribed: Subscribe,  # noqa: F811 (the fixture imported above)
) -> None:
    await create(api, admin, "orchard")
    await put(api, admin, f"{GROUPS}/orchard/config", {"interval_s": 60, "led": True})
    passwords = {
        "o-1": await register(api, admin, "o-1", group="orchard"),
        "o-2": await register(api, admin, "o-2", group="orchard"),
    }
    # o-2 sets every key the group does: the group's part changes nothing it receives.
    await put(api, admin, "/api/v1/devices/o-2/config", {"interval_s": 5, "led": False})
    await put(api, admin, "/api/v1/devices/o-1/config", {"name": "north"})
    o1 = await subscribed("o-1", passwords["o-1"])
    before = {"version": 2, "config": {"interval_s": 60, "led": True, "name": "north"}}
    assert await eventually(lambda: configs(o1) == [before])
    revoked_id, _ = await new_key(api, admin, name="old line", group="orchard")
    assert (
        await api.http.delete(f"/api/v1/provisioning-keys/{revoked_id}", headers=admin)
    ).status_code == 204

    deleted = await api.http.delete(f"{GROUPS}/orchard", headers=await api.user("operator"))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {
        "name": "orchard",
        "devices_ungrouped": 2,
        "devices_versioned": 1,
        "delivery_pending": 0,
    }

    # The devices stay, in no group; o-1 received its configuration without the group's part.
    for device_id in ("o-1", "o-2"):
        found = await api.http.get(f"/api/v1/devices/{device_id}", headers=admin)
        assert found.status_code == 200 and found.json()["group"] is None
    assert await eventually(
        lambda: configs(o1)[-1:] == [{"version": 3, "config": {"name": "north"}}]
    )
    o1_config = (await api.http.get("/api/v1/devices/o-1/config", headers=admin)).json()
    assert (o1_config["version"], o1_config["group"], o1_config["effective"]) == (
        3,
        None,
        {"name": "north"},
    )
    assert o1_config["published_version"] == 3
    o2_config = (await api.http.get("/api/v1/devices/o-2/config", headers=admin)).json()
    assert (o2_config["version"], o2_config["effective"]) == (2, {"interval_s": 5, "led": False})
    history = (await api.http.get("/api/v1/devices/o-1/config/history", headers=admin)).json()
    assert (history["items"][0]["scope"], history["items"][0]["version"]) == ("membership", 3)

    assert_error(await api.http.get(f"{GROUPS}/orchard", headers=admin), 404, "not_found")
    assert_error(await api.http.delete(f"{GROUPS}/orchard", headers=admin), 404, "not_found")
    keys = (await api.http.get("/api/v1/provisioning-keys", headers=admin)).json()["items"]
    assert [k["group"] for k in keys if k["key_id"] == revoked_id] == [None]
    # A new group of the same name starts afresh: the old configuration went with the group.
    await create(api, admin, "orchard")
    fresh = (await api.http.get(f"{GROUPS}/orchard/config", headers=admin)).json()
    assert (fresh["config"], fresh["version"]) == ({}, 0)
    (entry,) = await audit(api, admin, "group.delete")
    assert (entry["target_id"], entry["detail"]) == (
        "orchard",
        {"devices_ungrouped": 2, "devices_versioned": 1},
    )


async def test_a_group_a_usable_provisioning_key_fills_is_not_deleted(
    api: Api, admin: dict[str, str]
) -> None:
    await create(api, admin, "line-3")
    await register(api, admin, "l-1", group="line-3")
    key_id, _ = await new_key(api, admin, name="line 3 flasher", group="line-3")

    refused = await api.http.delete(f"{GROUPS}/line-3", headers=admin)
    assert_error(refused, 409, "conflict")
    assert "line 3 flasher" in refused.json()["error"]["message"]
    assert (await api.http.get(f"{GROUPS}/line-3", headers=admin)).json()["device_count"] == 1
    assert (await api.http.get("/api/v1/devices/l-1", headers=admin)).json()["group"] == "line-3"
    assert await audit(api, admin, "group.delete") == []

    await api.http.delete(f"/api/v1/provisioning-keys/{key_id}", headers=admin)
    assert (await api.http.delete(f"{GROUPS}/line-3", headers=admin)).status_code == 200


async def test_viewers_read_groups_and_change_none(api: Api, admin: dict[str, str]) -> None:
    viewer = await api.user("viewer")
    await create(api, admin, "kept")
    assert (await api.http.get(f"{GROUPS}/kept", headers=viewer)).status_code == 200
    assert_error(
        await api.http.patch(f"{GROUPS}/kept", headers=viewer, json={"name": "gone"}),
        403,
        "forbidden",
    )
    assert_error(await api.http.delete(f"{GROUPS}/kept", headers=viewer), 403, "forbidden")
    assert (await api.http.get(f"{GROUPS}/kept", headers=viewer)).json()["name"] == "kept"
