"""The audit log records who changed what, in the change's own transaction; admins read it."""

from __future__ import annotations

from tests.api.conftest import Api


async def test_changes_are_recorded_with_their_actor(api: Api, admin: dict[str, str]) -> None:
    http = api.http
    assert (
        await http.post("/api/v1/groups", headers=admin, json={"name": "farm"})
    ).status_code == 201
    operator = await api.user("operator")
    created = await http.post(
        "/api/v1/devices", headers=operator, json={"device_id": "a-1", "group": "farm"}
    )
    assert created.status_code == 201
    await http.patch("/api/v1/devices/a-1", headers=operator, json={"enabled": False})
    await http.patch("/api/v1/devices/a-1", headers=operator, json={"name": "pump"})
    await http.post("/api/v1/devices/a-1/credentials", headers=admin)
    await http.delete("/api/v1/devices/a-1", headers=admin)

    log = await http.get("/api/v1/audit", headers=admin, params={"target_id": "a-1"})
    assert log.status_code == 200
    entries = [(e["action"], e["actor"].split(":")[0]) for e in log.json()["items"]]
    assert entries == [  # newest first
        ("device.delete", "user"),
        ("device.rotate_credentials", "user"),
        ("device.update", "user"),
        ("device.disable", "user"),
        ("device.create", "user"),
    ]
    newest = log.json()["items"][-1]
    assert newest["actor"].startswith("user:operator-")
    assert newest["detail"] == {"group": "farm", "device_type": ""}


async def test_a_failed_change_leaves_no_entry(api: Api, admin: dict[str, str]) -> None:
    refused = await api.http.post(
        "/api/v1/devices", headers=admin, json={"device_id": "b-1", "group": "nowhere"}
    )
    assert refused.status_code == 422
    log = await api.http.get("/api/v1/audit", headers=admin, params={"target_id": "b-1"})
    assert log.json()["items"] == []


async def test_users_and_keys_are_audited_and_only_admins_read(
    api: Api, admin: dict[str, str]
) -> None:
    viewer = await api.user("viewer")
    key = await api.http.post("/api/v1/api-keys", headers=viewer, json={"name": "script"})
    assert key.status_code == 201
    actions = [
        e["action"] for e in (await api.http.get("/api/v1/audit", headers=admin)).json()["items"]
    ]
    assert actions[:2] == ["api_key.create", "user.create"]
    for role in ("viewer", "operator"):
        denied = await api.http.get("/api/v1/audit", headers=await api.user(role))
        assert denied.status_code == 403
        assert denied.json()["error"]["code"]
    pages = await api.http.get("/api/v1/audit", headers=admin, params={"limit": 1})
    assert len(pages.json()["items"]) == 1 and pages.json()["next_cursor"]
