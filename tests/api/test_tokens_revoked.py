"""Tokens die with the access they carried: a password or role change, a deletion or a
sign-out ends them at once, and API keys act with their user's role of the moment."""

from __future__ import annotations

from tests.api.conftest import ADMIN_PASSWORD, Api
from tests.api.test_streams import open_stream, server  # noqa: F401 (a fixture)

PASSWORD = "a-long-password"


class Session:
    """One sign-in: its access and refresh tokens."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.access = tokens["access_token"]
        self.refresh = tokens["refresh_token"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


async def sign_in(api: Api, username: str, password: str = PASSWORD) -> Session:
    response = await api.http.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    return Session(response.json())


async def new_user(api: Api, admin: dict[str, str], username: str, role: str) -> int:
    created = await api.http.post(
        "/api/v1/users",
        headers=admin,
        json={"username": username, "password": PASSWORD, "role": role},
    )
    assert created.status_code == 201, created.text
    user_id: int = created.json()["id"]
    return user_id


async def refreshes(api: Api, session: Session) -> bool:
    response = await api.http.post("/api/v1/auth/refresh", json={"refresh_token": session.refresh})
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


async def reads(api: Api, headers: dict[str, str]) -> bool:
    response = await api.http.get("/api/v1/devices", headers=headers)
    assert response.status_code in (200, 401), response.text
    if response.status_code == 401:
        assert response.json()["error"]["code"] == "unauthorized"
    return response.status_code == 200


async def test_an_admin_changing_a_password_ends_the_users_sessions(
    api: Api, admin: dict[str, str]
) -> None:
    user_id = await new_user(api, admin, "olga", "operator")
    session = await sign_in(api, "olga")
    assert await reads(api, session.headers) and await refreshes(api, session)

    changed = await api.http.patch(
        f"/api/v1/users/{user_id}", headers=admin, json={"password": "another-long-one"}
    )
    assert changed.status_code == 200, changed.text
    assert not await reads(api, session.headers)
    assert not await refreshes(api, session)
    assert await reads(api, (await sign_in(api, "olga", "another-long-one")).headers)


async def test_a_role_change_ends_the_users_sessions(api: Api, admin: dict[str, str]) -> None:
    user_id = await new_user(api, admin, "piet", "operator")
    session = await sign_in(api, "piet")
    changed = await api.http.patch(
        f"/api/v1/users/{user_id}", headers=admin, json={"role": "viewer"}
    )
    assert changed.status_code == 200, changed.text
    assert not await reads(api, session.headers)
    assert not await refreshes(api, session)
    again = await sign_in(api, "piet")
    refused = await api.http.post("/api/v1/groups", headers=again.headers, json={"name": "g"})
    assert refused.status_code == 403  # the new session has the new role


async def test_deleting_a_user_ends_their_sessions_and_api_keys(
    api: Api, admin: dict[str, str]
) -> None:
    user_id = await new_user(api, admin, "quinn", "operator")
    session = await sign_in(api, "quinn")
    created = await api.http.post("/api/v1/api-keys", headers=session.headers, json={"name": "k"})
    key = {"X-API-Key": created.json()["api_key"]}
    assert await reads(api, key)

    assert (await api.http.delete(f"/api/v1/users/{user_id}", headers=admin)).status_code == 204
    assert not await reads(api, session.headers)
    assert not await refreshes(api, session)
    assert not await reads(api, key)


async def test_an_api_key_has_its_users_role_of_the_moment(api: Api, admin: dict[str, str]) -> None:
    user_id = await new_user(api, admin, "rosa", "operator")
    session = await sign_in(api, "rosa")
    created = await api.http.post("/api/v1/api-keys", headers=session.headers, json={"name": "k"})
    key = {"X-API-Key": created.json()["api_key"]}
    group = await api.http.post("/api/v1/groups", headers=key, json={"name": "farm"})
    assert group.status_code == 201

    await api.http.patch(f"/api/v1/users/{user_id}", headers=admin, json={"role": "viewer"})
    assert (
        await api.http.post("/api/v1/groups", headers=key, json={"name": "depot"})
    ).status_code == 403
    assert await reads(api, key)  # keys outlive a role change, with the new role


async def test_changing_ones_own_password(api: Api, admin: dict[str, str]) -> None:
    await new_user(api, admin, "sami", "viewer")
    session = await sign_in(api, "sami")
    elsewhere = await sign_in(api, "sami")  # the same user on another device

    def change(current: str, new: str) -> dict[str, object]:
        return {"current_password": current, "new_password": new}

    wrong = await api.http.post(
        "/api/v1/auth/password", headers=session.headers, json=change("not-it-at-all", "x" * 12)
    )
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "wrong_password"
    short = await api.http.post(
        "/api/v1/auth/password", headers=session.headers, json=change(PASSWORD, "short")
    )
    assert short.status_code == 422  # the same rule as when an admin sets one
    assert await reads(api, session.headers)  # neither changed anything

    changed = await api.http.post(
        "/api/v1/auth/password", headers=session.headers, json=change(PASSWORD, "sami-chose-this")
    )
    assert changed.status_code == 200, changed.text
    for old in (session, elsewhere):
        assert not await reads(api, old.headers)
        assert not await refreshes(api, old)
    assert await reads(api, Session(changed.json()).headers)
    await sign_in(api, "sami", "sami-chose-this")
    old_password = await api.http.post(
        "/api/v1/auth/login", json={"username": "sami", "password": PASSWORD}
    )
    assert old_password.status_code == 401
    audit = await api.http.get("/api/v1/audit", headers=admin, params={"target_id": "sami"})
    assert audit.json()["items"][0]["action"] == "user.change_password"
    assert audit.json()["items"][0]["actor"] == "user:sami"


async def test_signing_out_ends_that_session_only(api: Api, admin: dict[str, str]) -> None:
    await new_user(api, admin, "tove", "viewer")
    by_refresh, by_access, other = [await sign_in(api, "tove") for _ in range(3)]

    # With the refresh token in the body (enough even when the access token has expired).
    out = await api.http.post("/api/v1/auth/logout", json={"refresh_token": by_refresh.refresh})
    assert out.status_code == 204, out.text
    assert not await refreshes(api, by_refresh)
    assert not await reads(api, by_refresh.headers)  # its access token too

    # With the access token.
    out = await api.http.post("/api/v1/auth/logout", headers=by_access.headers)
    assert out.status_code == 204, out.text
    assert not await refreshes(api, by_access)
    assert not await reads(api, by_access.headers)

    assert await reads(api, other.headers) and await refreshes(api, other)
    again = await api.http.post("/api/v1/auth/logout", headers=by_access.headers)
    assert again.status_code == 401
    assert (await api.http.post("/api/v1/auth/logout")).status_code == 401


async def test_signing_out_everywhere(api: Api, admin: dict[str, str]) -> None:
    await new_user(api, admin, "ulla", "viewer")
    first, second = await sign_in(api, "ulla"), await sign_in(api, "ulla")
    out = await api.http.post(
        "/api/v1/auth/logout", headers=first.headers, json={"everywhere": True}
    )
    assert out.status_code == 204, out.text
    for session in (first, second):
        assert not await reads(api, session.headers)
        assert not await refreshes(api, session)
    assert await reads(api, (await sign_in(api, "ulla")).headers)


async def test_an_open_stream_ends_when_its_session_is_revoked(
    api: Api,
    admin: dict[str, str],
    server: str,  # noqa: F811 (the fixture imported above)
) -> None:
    user_id = await new_user(api, admin, "vera", "viewer")
    session = await sign_in(api, "vera")
    async with open_stream(f"{server}/api/v1/fleet/stream", session.headers) as events:
        await events.until("summary")
        changed = await api.http.patch(
            f"/api/v1/users/{user_id}", headers=admin, json={"password": "vera-new-password"}
        )
        assert changed.status_code == 200
        # Within a few seconds (deps.STREAM_RECHECK_SECONDS), not at the token's expiry.
        ended = await events.until("expired")
    assert "revoked" in ended["reason"]


async def test_refresh_gives_a_token_of_the_same_session(api: Api) -> None:
    tokens = (
        await api.http.post(
            "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        )
    ).json()
    session = Session(tokens)
    renewed = await api.http.post("/api/v1/auth/refresh", json={"refresh_token": session.refresh})
    fresh = {"Authorization": f"Bearer {renewed.json()['access_token']}"}
    await api.http.post("/api/v1/auth/logout", json={"refresh_token": session.refresh})
    assert not await reads(api, fresh)  # renewed or not, the session's tokens end together


async def test_an_open_stream_ends_when_its_api_key_is_revoked(
    api: Api,
    admin: dict[str, str],
    server: str,  # noqa: F811 (the fixture imported above)
) -> None:
    created = await api.http.post("/api/v1/api-keys", headers=admin, json={"name": "wall"})
    key = {"X-API-Key": created.json()["api_key"]}
    async with open_stream(f"{server}/api/v1/fleet/stream", key) as events:
        await events.until("summary")
        revoked = await api.http.delete(
            f"/api/v1/api-keys/{created.json()['key_id']}", headers=admin
        )
        assert revoked.status_code == 204
        ended = await events.until("expired")  # an API key has no expiry: only this ends it
    assert "revoked" in ended["reason"]
