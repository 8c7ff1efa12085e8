from __future__ import annotations

from tests.api.conftest import Api
from tests.api.test_auth_and_roles import assert_error


async def test_register_answers_credentials_once(api: Api, admin: dict[str, str]) -> None:
    assert (
        await api.http.post("/api/v1/groups", headers=admin, json={"name": "farm-a"})
    ).status_code == 201
    created = await api.http.post(
        "/api/v1/devices",
        headers=admin,
        json={
            "device_id": "sensor-1",
            "name": "Greenhouse",
            "device_type": "esp32",
            "group": "farm-a",
            "metadata": {"row": 3},
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["device_id"] == "sensor-1"
    assert body["mqtt"]["username"] == "sensor-1"
    assert len(body["mqtt"]["password"]) >= 24
    assert body["mqtt"]["port"] == api.broker.endpoint.port
    assert (body["group"], body["status"], body["enabled"]) == ("farm-a", "never_seen", True)
    fetched = (await api.http.get("/api/v1/devices/sensor-1", headers=admin)).json()
    assert "mqtt" not in fetched and "password" not in str(fetched)
    assert fetched["metadata"] == {"row": 3}
    async with api.pool.connection() as conn:
        stored = await (
            await conn.execute(
                "SELECT secret_hash FROM device_credentials WHERE device_id = 'sensor-1'"
            )
        ).fetchone()
    assert stored is not None and stored["secret_hash"].startswith("pbkdf2_sha512$")
    assert body["mqtt"]["password"] not in stored["secret_hash"]


async def test_registry_validation(api: Api, admin: dict[str, str]) -> None:
    await api.http.post("/api/v1/devices", headers=admin, json={"device_id": "d1"})
    assert_error(
        await api.http.post("/api/v1/devices", headers=admin, json={"device_id": "d1"}),
        409,
        "conflict",
    )
    # fieldline-... are fieldline's own MQTT client ids (a device's client id is its id).
    for bad in ("a/b", "+", "#", "", "x" * 200, "$SYS", "fieldline-ingest-1", "FieldLine-x"):
        assert_error(
            await api.http.post("/api/v1/devices", headers=admin, json={"device_id": bad}),
            422,
            "validation_error",
        )
    assert_error(
        await api.http.post(
            "/api/v1/devices", headers=admin, json={"device_id": "d2", "group": "nowhere"}
        ),
        422,
        "validation_error",
    )
    assert_error(await api.http.get("/api/v1/devices/ghost", headers=admin), 404, "not_found")
    assert_error(
        await api.http.patch("/api/v1/devices/ghost", headers=admin, json={"name": "x"}),
        404,
        "not_found",
    )
    assert_error(
        await api.http.patch("/api/v1/devices/d1", headers=admin, json={"enabled": None}),
        422,
        "validation_error",
    )


async def test_list_pages_and_filters_by_group(api: Api, admin: dict[str, str]) -> None:
    await api.http.post("/api/v1/groups", headers=admin, json={"name": "depot"})
    for i in range(5):
        await api.http.post(
            "/api/v1/devices",
            headers=admin,
            json={"device_id": f"bus-{i}", "group": "depot" if i % 2 else None},
        )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.http.get("/api/v1/devices", headers=admin, params=params)).json()
        seen += [d["device_id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"bus-{i}" for i in range(5)]
    depot = (await api.http.get("/api/v1/devices", headers=admin, params={"group": "depot"})).json()
    assert [d["device_id"] for d in depot["items"]] == ["bus-1", "bus-3"]


async def test_patch_disable_rotate_delete(api: Api, admin: dict[str, str]) -> None:
    created = (
        await api.http.post("/api/v1/devices", headers=admin, json={"device_id": "d1"})
    ).json()
    patched = await api.http.patch(
        "/api/v1/devices/d1", headers=admin, json={"name": "Renamed", "enabled": False}
    )
    assert (patched.json()["name"], patched.json()["enabled"]) == ("Renamed", False)
    rotated = await api.http.post("/api/v1/devices/d1/credentials", headers=admin)
    assert rotated.status_code == 200
    assert rotated.json()["mqtt"]["password"] != created["mqtt"]["password"]
    status = (await api.http.get("/api/v1/devices/d1/status", headers=admin)).json()
    assert status == {
        "device_id": "d1",
        "status": "never_seen",
        "enabled": False,
        "last_seen": None,
        "firmware_version": None,
        "battery_voltage": None,
        "pending_update": False,
    }
    assert (await api.http.delete("/api/v1/devices/d1", headers=admin)).status_code == 204
    assert_error(await api.http.get("/api/v1/devices/d1", headers=admin), 404, "not_found")
    assert_error(
        await api.http.post("/api/v1/devices/d1/credentials", headers=admin), 404, "not_found"
    )


async def test_values_the_database_cannot_store_are_a_422(api: Api, admin: dict[str, str]) -> None:
    for body in (
        b'{"device_id": "nul-1", "name": "a\\u0000b"}',
        b'{"device_id": "nan-1", "metadata": {"v": NaN}}',
    ):
        answer = await api.http.post(
            "/api/v1/devices",
            headers={**admin, "Content-Type": "application/json"},
            content=body,
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "invalid_value"
    listed = await api.http.get("/api/v1/devices", headers=admin)
    assert listed.json()["items"] == []
