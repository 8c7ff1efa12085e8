"""Zero-touch provisioning end to end: keys, signed self-registration, re-provisioning.

Signatures here are made with the standard library only, as docs/devices.md tells
device developers to, never with fieldline's own signing code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import orjson
import psycopg
import pytest
from pydantic import SecretStr

from fieldline.api.app import create_app
from fieldline.ops.metrics import Metrics
from fieldline.security.passwords import verify_encoded
from fieldline.storage import housekeeping
from fieldline.worker.jobs import HOUSEKEEPING
from fieldline.worker.service import Worker
from tests.api.conftest import Api
from tests.api.test_auth_and_roles import assert_error
from tests.broker.conftest import Probe, refused


def signed_headers(
    key_id: str, secret: str, body: bytes, *, timestamp: int | str | None = None
) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Key-Id": key_id,
        "X-Timestamp": stamp,
        "X-Signature": signature,
        "Content-Type": "application/json",
    }


async def send(
    http: httpx.AsyncClient,
    key_id: str,
    secret: str,
    payload: dict[str, Any] | bytes,
    *,
    timestamp: int | str | None = None,
) -> httpx.Response:
    # A nonce (an ignored extra field) keeps two requests in the same second from being one
    # signature, which would be refused as a replay.
    body = (
        payload if isinstance(payload, bytes) else orjson.dumps({**payload, "nonce": uuid4().hex})
    )
    headers = signed_headers(key_id, secret, body, timestamp=timestamp)
    return await http.post("/provision", content=body, headers=headers)


async def new_key(api: Api, admin: dict[str, str], **fields: Any) -> tuple[str, str]:
    created = await api.http.post(
        "/api/v1/provisioning-keys", headers=admin, json={"name": "factory", **fields}
    )
    assert created.status_code == 201, created.text
    return created.json()["key_id"], created.json()["secret"]


async def scalar(api: Api, sql: str, *params: object) -> Any:
    async with api.pool.connection() as conn:
        row = await (await conn.execute(sql, params)).fetchone()
    assert row is not None
    return next(iter(row.values()))


async def device_ids(api: Api) -> list[str]:
    return list(
        await scalar(
            api,
            "SELECT coalesce(array_agg(device_id ORDER BY device_id), '{}') AS ids FROM devices",
        )
    )


async def provision_audit(api: Api) -> list[tuple[str, str]]:
    async with api.pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT actor, target_id FROM audit_log"
                " WHERE action = 'device.provision' ORDER BY id"
            )
        ).fetchall()
    return [(row["actor"], row["target_id"]) for row in rows]


async def stored_hash(api: Api, device_id: str) -> str:
    return str(
        await scalar(
            api, "SELECT secret_hash FROM device_credentials WHERE device_id = %s", device_id
        )
    )


async def connects(api: Api, username: str, password: str) -> bool:
    probe = Probe()
    try:
        await probe.connect(api.broker.endpoint, username, password)
        return bool(probe.client.is_connected)
    finally:
        await probe.close()


async def test_a_device_with_only_a_key_provisions_itself(api: Api, admin: dict[str, str]) -> None:
    await api.http.post("/api/v1/groups", headers=admin, json={"name": "farm"})
    key_id, secret = await new_key(api, admin, group="farm", device_type="esp32", max_uses=5)
    answer = await send(
        api.http,
        key_id,
        secret,
        {"device_id": "sensor-1", "name": "North field", "metadata": {"row": 4}},
    )
    assert answer.status_code == 201, answer.text
    creds = answer.json()
    assert set(creds) == {
        "device_id",
        "username",
        "password",
        "host",
        "port",
        "tls_port",
        "ca_certificate",
    }
    assert (creds["device_id"], creds["username"]) == ("sensor-1", "sensor-1")
    assert (creds["host"], creds["port"]) == ("127.0.0.1", api.broker.endpoint.port)
    assert (creds["tls_port"], creds["ca_certificate"]) == (None, None)
    assert verify_encoded(await stored_hash(api, "sensor-1"), creds["password"])
    assert await connects(api, "sensor-1", creds["password"])

    device = (await api.http.get("/api/v1/devices/sensor-1", headers=admin)).json()
    assert (device["group"], device["device_type"], device["name"]) == (
        "farm",
        "esp32",
        "North field",
    )
    assert device["metadata"] == {"row": 4}
    assert await provision_audit(api) == [(f"provisioning-key:{key_id}", "sensor-1")]
    listed = (await api.http.get("/api/v1/provisioning-keys", headers=admin)).json()["items"]
    assert [(k["key_id"], k["uses"], k["state"]) for k in listed] == [(key_id, 1, "active")]
    assert secret not in str(listed)
    assert (
        await scalar(
            api,
            "SELECT count(*) FROM provisioning_keys"
            " WHERE position(convert_to(%s, 'UTF8') IN sealed_secret) > 0",
            secret,
        )
        == 0
    )


async def test_authentication_failures_are_distinct_401s_that_change_nothing(
    api: Api, admin: dict[str, str]
) -> None:
    key_id, secret = await new_key(api, admin)
    body = orjson.dumps({"device_id": "d-1"})
    now = int(time.time())
    cases: list[tuple[str, dict[str, str]]] = [
        ("missing_signature", {"Content-Type": "application/json"}),
        ("missing_signature", {**signed_headers(key_id, secret, body), "X-Signature": ""}),
        ("unknown_key", signed_headers("pk_nope", secret, body)),
        ("unknown_key", signed_headers("pk_' OR 1=1 --", secret, body)),
        ("unknown_key", signed_headers("x" * 65, secret, body)),
        ("unknown_key", signed_headers("default", secret, body)),  # no provisioning_secret set
        ("bad_signature", signed_headers(key_id, "not-the-secret", body)),
        ("bad_signature", signed_headers(key_id, secret, b'{"device_id":"d-2"}')),
        ("bad_signature", {**signed_headers(key_id, secret, body), "X-Signature": "abc"}),
        ("stale_timestamp", signed_headers(key_id, secret, body, timestamp=now - 330)),
        ("stale_timestamp", signed_headers(key_id, secret, body, timestamp=now + 330)),
        ("stale_timestamp", signed_headers(key_id, secret, body, timestamp=now * 1000)),
        ("stale_timestamp", signed_headers(key_id, secret, body, timestamp="soon")),
    ]
    for code, headers in cases:
        refused_answer = await api.http.post("/provision", content=body, headers=headers)
        assert_error(refused_answer, 401, code)
        assert refused_answer.headers["WWW-Authenticate"].startswith("HMAC-SHA256")
        assert secret not in refused_answer.text
    # Within the tolerance, either way, is fine.
    assert (
        await send(api.http, key_id, secret, {"device_id": "early"}, timestamp=now + 250)
    ).status_code == 201
    assert (
        await send(api.http, key_id, secret, {"device_id": "late"}, timestamp=now - 250)
    ).status_code == 201
    assert await device_ids(api) == ["early", "late"]
    assert [target for _, target in await provision_audit(api)] == ["early", "late"]


async def test_a_signature_is_accepted_once(api: Api, admin: dict[str, str]) -> None:
    key_id, secret = await new_key(api, admin)
    body = orjson.dumps({"device_id": "d-1"})
    headers = signed_headers(key_id, secret, body)
    assert (await api.http.post("/provision", content=body, headers=headers)).status_code == 201
    # Replayed: even though the device now exists (409 otherwise), the signature is refused.
    assert_error(await api.http.post("/provision", content=body, headers=headers), 401, "replayed")
    # A request that failed is not replayable either (an allowance later must not revive it).
    bad = orjson.dumps({"device_id": "bad/id"})
    bad_headers = signed_headers(key_id, secret, bad)
    assert_error(
        await api.http.post("/provision", content=bad, headers=bad_headers), 422, "validation_error"
    )
    assert_error(
        await api.http.post("/provision", content=bad, headers=bad_headers), 401, "replayed"
    )
    assert await device_ids(api) == ["d-1"]


async def test_revoked_expired_and_exhausted_keys_are_refused(
    api: Api, admin: dict[str, str]
) -> None:
    once_id, once = await new_key(api, admin, max_uses=1)
    assert (await send(api.http, once_id, once, {"device_id": "first"})).status_code == 201
    assert_error(await send(api.http, once_id, once, {"device_id": "second"}), 401, "key_exhausted")

    revoked_id, revoked = await new_key(api, admin)
    assert (
        await api.http.delete(f"/api/v1/provisioning-keys/{revoked_id}", headers=admin)
    ).status_code == 204
    assert_error(await send(api.http, revoked_id, revoked, {"device_id": "r"}), 401, "key_revoked")
    # Only a caller holding the secret learns a key's state.
    assert_error(
        await send(api.http, revoked_id, "guess", {"device_id": "r"}), 401, "bad_signature"
    )

    expired_id, expired = await new_key(
        api, admin, expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    )
    async with api.pool.connection() as conn:
        await conn.execute(
            "UPDATE provisioning_keys SET expires_at = now() - interval '1 second'"
            " WHERE key_id = %s",
            (expired_id,),
        )
    assert_error(await send(api.http, expired_id, expired, {"device_id": "e"}), 401, "key_expired")

    assert await device_ids(api) == ["first"]
    assert [target for _, target in await provision_audit(api)] == ["first"]
    listed = {
        k["key_id"]: (k["state"], k["revoked"], k["uses"])
        for k in (await api.http.get("/api/v1/provisioning-keys", headers=admin)).json()["items"]
    }
    assert listed == {
        once_id: ("exhausted", False, 1),
        revoked_id: ("revoked", True, 0),
        expired_id: ("expired", False, 0),
    }


async def test_devices_racing_for_the_last_use_cannot_both_win(
    api: Api, admin: dict[str, str]
) -> None:
    key_id, secret = await new_key(api, admin, max_uses=1)
    racers = 3
    # Hold the key's row so every request gets past its early checks and then waits on the
    # counting UPDATE; released, they race for the one use.
    async with await psycopg.AsyncConnection.connect(api.url) as locker:
        async with locker.transaction():
            await locker.execute(
                "SELECT 1 FROM provisioning_keys WHERE key_id = %s FOR UPDATE", (key_id,)
            )
            requests = [
                asyncio.create_task(send(api.http, key_id, secret, {"device_id": f"racer-{n}"}))
                for n in range(racers)
            ]
            deadline = time.monotonic() + 10
            while await waiting_on_locks(api) < racers:
                assert time.monotonic() < deadline, "the requests never reached the key's row"
                await asyncio.sleep(0.02)
        answers = await asyncio.gather(*requests)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [401] * (racers - 1), [a.text for a in answers]
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 401} == {"key_exhausted"}
    assert len(await device_ids(api)) == 1
    assert await scalar(api, "SELECT uses FROM provisioning_keys WHERE key_id = %s", key_id) == 1


async def waiting_on_locks(api: Api) -> int:
    return int(
        await scalar(
            api,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"name": "no id"}',
        b'{"device_id": "a/b"}',
        b'{"device_id": "$SYS"}',
        b'{"device_id": "fieldline-ingest-1"}',
        b'{"device_id": 42}',
        b'{"device_id": "ok", "metadata": [1]}',
        b'{"device_id": "ok", "name": "nul \\u0000"}',
        b'{"device_id": "ok", "metadata": {"a": ["\\u0000"]}}',
        b'{"device_id": "ok", "metadata": {"\\u0000": 1}}',
    ],
)
async def test_malformed_bodies_are_422_once_the_signature_holds(
    api: Api, admin: dict[str, str], body: bytes
) -> None:
    key_id, secret = await new_key(api, admin)
    # Unsigned callers learn nothing about the body.
    assert_error(
        await api.http.post(
            "/provision",
            content=body,
            headers={**signed_headers(key_id, secret, body), "X-Signature": "0" * 64},
        ),
        401,
        "bad_signature",
    )
    assert_error(await send(api.http, key_id, secret, body), 422, "validation_error")
    assert await device_ids(api) == []
    assert await provision_audit(api) == []


async def test_a_scoped_key_decides_the_group_and_type(api: Api, admin: dict[str, str]) -> None:
    await api.http.post("/api/v1/groups", headers=admin, json={"name": "depot"})
    key_id, secret = await new_key(api, admin, group="depot", device_type="tracker")
    assert_error(
        await send(api.http, key_id, secret, {"device_id": "bus-1", "device_type": "camera"}),
        403,
        "out_of_scope",
    )
    assert await device_ids(api) == []
    # Naming the key's own type, or none, is fine; a `group` in the body is ignored.
    for device_id, extra in (("bus-1", {"device_type": "tracker"}), ("bus-2", {"group": "x"})):
        answer = await send(api.http, key_id, secret, {"device_id": device_id, **extra})
        assert answer.status_code == 201, answer.text
        device = (await api.http.get(f"/api/v1/devices/{device_id}", headers=admin)).json()
        assert (device["group"], device["device_type"]) == ("depot", "tracker")
    assert await scalar(api, "SELECT uses FROM provisioning_keys WHERE key_id = %s", key_id) == 2


async def test_an_existing_device_is_409_until_an_operator_allows_reprovisioning(
    api: Api, admin: dict[str, str]
) -> None:
    key_id, secret = await new_key(api, admin)
    first = await send(api.http, key_id, secret, {"device_id": "pump-1"})
    assert first.status_code == 201
    old_password = first.json()["password"]
    assert_error(
        await send(api.http, key_id, secret, {"device_id": "pump-1"}), 409, "already_provisioned"
    )

    operator = await api.user("operator")
    allowed = await api.http.post(
        "/api/v1/devices/pump-1/allow-reprovision",
        headers=operator,
        json={"valid_for_seconds": 600},
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["device_id"] == "pump-1"
    async with api.pool.connection() as conn:  # as ingest records a connected device
        await conn.execute("UPDATE devices SET status = 'online' WHERE device_id = 'pump-1'")
    again = await send(api.http, key_id, secret, {"device_id": "pump-1"})
    assert again.status_code == 200, again.text
    # The broker dropped the old password's session: offline at once, and why.
    status = (await api.http.get("/api/v1/devices/pump-1/status", headers=admin)).json()
    assert status["status"] == "offline", status
    history = await api.http.get("/api/v1/devices/pump-1/status-history", headers=admin)
    assert history.json()["items"][0]["detail"] == {"reason": "credentials_rotated"}
    new_password = again.json()["password"]
    assert new_password != old_password
    stored = await stored_hash(api, "pump-1")
    assert verify_encoded(stored, new_password) and not verify_encoded(stored, old_password)
    assert await refused(api.broker.endpoint, "pump-1", old_password)
    assert await connects(api, "pump-1", new_password)
    # The allowance was used up.
    assert_error(
        await send(api.http, key_id, secret, {"device_id": "pump-1"}), 409, "already_provisioned"
    )

    log = await api.http.get("/api/v1/audit", headers=admin, params={"target_id": "pump-1"})
    entries = [(e["action"], e["actor"].split(":")[0], e["detail"]) for e in log.json()["items"]]
    assert [(action, actor) for action, actor, _ in entries] == [
        ("device.provision", "provisioning-key"),
        ("device.allow_reprovision", "user"),
        ("device.provision", "provisioning-key"),
    ]
    assert entries[0][2]["reprovision"] is True
    assert entries[1][2] == {"valid_for_seconds": 600}
    assert await scalar(api, "SELECT uses FROM provisioning_keys WHERE key_id = %s", key_id) == 2


async def test_reprovisioning_respects_scope_and_expiry(api: Api, admin: dict[str, str]) -> None:
    for group in ("north", "south"):
        await api.http.post("/api/v1/groups", headers=admin, json={"name": group})
    north_id, north = await new_key(api, admin, group="north")
    south_id, south = await new_key(api, admin, group="south")
    assert (await send(api.http, north_id, north, {"device_id": "gate"})).status_code == 201

    # Without a body the allowance lasts an hour.
    allowed = await api.http.post("/api/v1/devices/gate/allow-reprovision", headers=admin)
    expires = datetime.fromisoformat(allowed.json()["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    # Another group's key may not take over the device; the allowance survives that.
    assert_error(await send(api.http, south_id, south, {"device_id": "gate"}), 403, "out_of_scope")
    assert (await send(api.http, north_id, north, {"device_id": "gate"})).status_code == 200

    await api.http.post("/api/v1/devices/gate/allow-reprovision", headers=admin)
    async with api.pool.connection() as conn:
        await conn.execute("UPDATE reprovision_allowances SET expires_at = now() - interval '1s'")
    assert_error(
        await send(api.http, north_id, north, {"device_id": "gate"}), 409, "already_provisioned"
    )
    assert_error(
        await api.http.post("/api/v1/devices/ghost/allow-reprovision", headers=admin),
        404,
        "not_found",
    )
    assert_error(
        await api.http.post(
            "/api/v1/devices/gate/allow-reprovision", headers=admin, json={"valid_for_seconds": 0}
        ),
        422,
        "validation_error",
    )


async def test_the_default_key_from_settings(api: Api, admin: dict[str, str]) -> None:
    shared = "fleet-wide-hmac-secret-flashed-in-2023"
    api.reconfigure(provisioning_secret=SecretStr(shared))
    answer = await send(api.http, "default", shared, {"device_id": "legacy-1", "device_type": "x"})
    assert answer.status_code == 201, answer.text
    assert await connects(api, "legacy-1", answer.json()["password"])
    assert await provision_audit(api) == [("provisioning-key:default", "legacy-1")]
    assert_error(
        await send(api.http, "default", "wrong", {"device_id": "l-2"}), 401, "bad_signature"
    )
    assert_error(
        await api.http.delete("/api/v1/provisioning-keys/default", headers=admin), 409, "conflict"
    )
    assert (await api.http.get("/api/v1/provisioning-keys", headers=admin)).json()["items"] == []


@pytest.fixture
async def from_two_addresses(api: Api) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    # A refill slow enough that no token comes back while the test spends its burst,
    # however slow the machine.
    settings = api.context.settings.model_copy(
        update={"provisioning_rate_limit": 0.001, "provisioning_rate_burst": 20}
    )
    app = create_app(api.context.with_settings(settings))
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("192.0.2.1", 4000)),
            base_url="http://fieldline",
        ) as first,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("192.0.2.2", 4000)),
            base_url="http://fieldline",
        ) as second,
    ):
        yield first, second


async def test_each_address_is_rate_limited(
    api: Api, admin: dict[str, str], from_two_addresses: tuple[httpx.AsyncClient, ...]
) -> None:
    first, second = from_two_addresses
    key_id, secret = await new_key(api, admin)
    burst = 20
    # Failed attempts count as well as successful ones.
    assert (await send(first, key_id, secret, {"device_id": "ok-1"})).status_code == 201
    for _ in range(burst - 1):
        assert (await first.post("/provision", content=b"{}")).status_code == 401
    limited = await send(first, key_id, secret, {"device_id": "ok-2"})
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert (await send(second, key_id, secret, {"device_id": "ok-3"})).status_code == 201
    assert await device_ids(api) == ["ok-1", "ok-3"]


async def test_oversized_requests_are_refused_before_anything_else(
    api: Api, admin: dict[str, str]
) -> None:
    key_id, secret = await new_key(api, admin)
    body = orjson.dumps({"device_id": "big", "metadata": {"blob": "x" * 20_000}})
    assert_error(await send(api.http, key_id, secret, body), 413, "payload_too_large")
    assert await device_ids(api) == []


async def test_keys_are_operator_managed_and_audited(api: Api, admin: dict[str, str]) -> None:
    viewer = await api.user("viewer")
    operator = await api.user("operator")
    assert_error(
        await api.http.post("/api/v1/provisioning-keys", headers=viewer, json={"name": "k"}),
        403,
        "forbidden",
    )
    by_operator = await api.http.post(
        "/api/v1/provisioning-keys", headers=operator, json={"name": "line-2"}
    )
    assert by_operator.status_code == 201, by_operator.text
    assert_error(await api.http.get("/api/v1/provisioning-keys", headers=viewer), 403, "forbidden")
    assert_error(
        await api.http.post("/api/v1/provisioning-keys", json={"name": "k"}), 401, "unauthorized"
    )
    assert_error(
        await api.http.post(
            "/api/v1/provisioning-keys", headers=admin, json={"name": "k", "group": "nowhere"}
        ),
        422,
        "validation_error",
    )
    assert_error(
        await api.http.post(
            "/api/v1/provisioning-keys",
            headers=admin,
            json={"name": "k", "expires_at": "2001-01-01T00:00:00Z"},
        ),
        422,
        "validation_error",
    )
    assert_error(
        await api.http.post(
            "/api/v1/provisioning-keys", headers=admin, json={"name": "k", "max_uses": 0}
        ),
        422,
        "validation_error",
    )
    key_id, _ = await new_key(api, admin, max_uses=10)
    assert (await api.http.get("/api/v1/provisioning-keys", headers=operator)).status_code == 200
    assert_error(
        await api.http.delete(f"/api/v1/provisioning-keys/{key_id}", headers=viewer),
        403,
        "forbidden",
    )
    assert_error(
        await api.http.post("/api/v1/devices/x/allow-reprovision", headers=viewer), 403, "forbidden"
    )
    for _ in range(2):  # revoking twice is fine, and audited once
        assert (
            await api.http.delete(f"/api/v1/provisioning-keys/{key_id}", headers=admin)
        ).status_code == 204
    assert_error(
        await api.http.delete("/api/v1/provisioning-keys/pk_ghost", headers=admin), 404, "not_found"
    )
    log = await api.http.get(
        "/api/v1/audit", headers=admin, params={"target_type": "provisioning_key"}
    )
    operator_key = by_operator.json()["key_id"]
    assert [(e["action"], e["target_id"]) for e in log.json()["items"]] == [
        ("provisioning_key.revoke", key_id),
        ("provisioning_key.create", key_id),
        ("provisioning_key.create", operator_key),
    ]
    assert log.json()["items"][1]["detail"]["max_uses"] == 10
    assert log.json()["items"][2]["actor"].startswith("user:operator-")


async def test_the_worker_forgets_signatures_too_old_to_replay(
    api: Api, admin: dict[str, str]
) -> None:
    key_id, secret = await new_key(api, admin)
    assert (await send(api.http, key_id, secret, {"device_id": "fresh"})).status_code == 201
    async with api.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO provisioning_signatures (signature, key_id, signed_at)"
            " VALUES ('old', %s, now() - interval '11 minutes')",
            (key_id,),
        )
    worker = Worker(settings=api.context.settings, pool=api.pool, metrics=Metrics())
    await worker.run_round(HOUSEKEEPING)
    assert await scalar(api, "SELECT count(*) FROM provisioning_signatures") == 1
    assert (
        await scalar(api, "SELECT count(*) FROM provisioning_signatures WHERE signature = 'old'")
        == 0
    )
    async with api.pool.connection() as conn:
        assert (
            await housekeeping.forget_provisioning_signatures(
                conn, datetime.now(UTC) + timedelta(minutes=20)
            )
            == 1
        )
