from __future__ import annotations

import pytest

from tests.api.conftest import ADMIN_PASSWORD, Api


def assert_error(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]


async def test_login_refresh_and_bad_credentials(api: Api) -> None:
    tokens = (
        await api.http.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
    ).json()
    assert tokens["token_type"] == "bearer"
    refreshed = await api.http.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    me = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    assert (await api.http.get("/api/v1/users", headers=me)).status_code == 200
    # An access token is not a refresh token, and the other way round.
    assert_error(
        await api.http.post("/api/v1/auth/refresh", json={"refresh_token": tokens["access_token"]}),
        401,
        "unauthorized",
    )
    assert_error(
        await api.http.get(
            "/api/v1/devices", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}
        ),
        401,
        "unauthorized",
    )
    assert_error(
        await api.http.post(
            "/api/v1/auth/login", json={"username": "admin", "password": "wrong-password"}
        ),
        401,
        "unauthorized",
    )
    assert_error(
        await api.http.post(
            "/api/v1/auth/login", json={"username": "nobody", "password": "wrong-password"}
        ),
        401,
        "unauthorized",
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/devices",
        "/api/v1/users",
        "/api/v1/groups",
        "/api/v1/rejected",
        "/api/v1/telemetry/latest",
    ],
)
async def test_every_route_needs_authentication(api: Api, path: str) -> None:
    assert_error(await api.http.get(path), 401, "unauthorized")
    assert_error(
        await api.http.get(path, headers={"Authorization": "Bearer forged"}), 401, "unauthorized"
    )


async def test_viewer_reads_but_cannot_write(api: Api) -> None:
    viewer = await api.user("viewer")
    assert (await api.http.get("/api/v1/devices", headers=viewer)).status_code == 200
    assert (await api.http.get("/api/v1/groups", headers=viewer)).status_code == 200
    assert_error(
        await api.http.post("/api/v1/devices", headers=viewer, json={"device_id": "d1"}),
        403,
        "forbidden",
    )
    assert_error(
        await api.http.post("/api/v1/groups", headers=viewer, json={"name": "g"}), 403, "forbidden"
    )
    assert_error(await api.http.get("/api/v1/rejected", headers=viewer), 403, "forbidden")
    assert_error(await api.http.get("/api/v1/users", headers=viewer), 403, "forbidden")


async def test_operator_manages_devices_but_not_users(api: Api) -> None:
    operator = await api.user("operator")
    created = await api.http.post("/api/v1/devices", headers=operator, json={"device_id": "d1"})
    assert created.status_code == 201
    assert (await api.http.get("/api/v1/rejected", headers=operator)).status_code == 200
    assert_error(await api.http.get("/api/v1/users", headers=operator), 403, "forbidden")
    assert_error(
        await api.http.post(
            "/api/v1/users",
            headers=operator,
            json={"username": "x", "password": "a-long-password", "role": "admin"},
        ),
        403,
        "forbidden",
    )


async def test_admin_manages_users(api: Api, admin: dict[str, str]) -> None:
    created = await api.http.post(
        "/api/v1/users",
        headers=admin,
        json={"username": "olga", "password": "a-long-password", "role": "viewer"},
    )
    assert created.status_code == 201
    user_id = created.json()["id"]
    assert_error(
        await api.http.post(
            "/api/v1/users",
            headers=admin,
            json={"username": "olga", "password": "a-long-password", "role": "viewer"},
        ),
        409,
        "conflict",
    )
    assert_error(
        await api.http.post(
            "/api/v1/users",
            headers=admin,
            json={"username": "short", "password": "short", "role": "viewer"},
        ),
        422,
        "validation_error",
    )
    promoted = await api.http.patch(
        f"/api/v1/users/{user_id}", headers=admin, json={"role": "operator"}
    )
    assert promoted.json()["role"] == "operator"
    olga = await api.login("olga", "a-long-password")
    assert (
        await api.http.post("/api/v1/groups", headers=olga, json={"name": "farm"})
    ).status_code == 201
    assert (await api.http.delete(f"/api/v1/users/{user_id}", headers=admin)).status_code == 204
    # A deleted user's token stops working at once.
    assert_error(await api.http.get("/api/v1/devices", headers=olga), 401, "unauthorized")
    assert_error(await api.http.get("/api/v1/users/999999", headers=admin), 404, "not_found")


async def test_api_keys_act_as_their_owner_until_revoked(api: Api) -> None:
    operator = await api.user("operator")
    created = await api.http.post("/api/v1/api-keys", headers=operator, json={"name": "script"})
    assert created.status_code == 201
    key = {"X-API-Key": created.json()["api_key"]}
    assert (
        await api.http.post("/api/v1/devices", headers=key, json={"device_id": "k1"})
    ).status_code == 201
    assert_error(await api.http.get("/api/v1/users", headers=key), 403, "forbidden")
    tampered = {"X-API-Key": created.json()["api_key"][:-2] + "xx"}
    assert_error(await api.http.get("/api/v1/devices", headers=tampered), 401, "unauthorized")
    revoked = await api.http.delete(
        f"/api/v1/api-keys/{created.json()['key_id']}", headers=operator
    )
    assert revoked.status_code == 204
    assert_error(await api.http.get("/api/v1/devices", headers=key), 401, "unauthorized")


async def test_errors_are_json_with_the_right_status(api: Api, admin: dict[str, str]) -> None:
    broken = await api.http.post(
        "/api/v1/devices",
        headers={**admin, "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert_error(broken, 422, "validation_error")
    assert_error(
        await api.http.get("/api/v1/devices?cursor=%%%", headers=admin), 400, "bad_request"
    )
    assert_error(
        await api.http.get("/api/v1/devices?limit=0", headers=admin), 422, "validation_error"
    )
    assert_error(await api.http.get("/api/v1/nowhere", headers=admin), 404, "not_found")
    assert_error(await api.http.put("/api/v1/devices", headers=admin), 405, "method_not_allowed")


async def test_correlation_id_is_echoed_or_made(api: Api) -> None:
    given = await api.http.get("/health", headers={"X-Correlation-ID": "abc-123"})
    assert given.headers["X-Correlation-ID"] == "abc-123"
    made = await api.http.get("/health")
    assert len(made.headers["X-Correlation-ID"]) == 32
