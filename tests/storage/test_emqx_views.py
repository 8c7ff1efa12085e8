"""The views EMQX 5's PostgreSQL authenticator and authorizer read, queried as EMQX queries them.

EMQX cannot run in this suite (no package for it here), so its side is reproduced from its
source: the exact query strings fieldline documents, run as prepared statements with the
username and client id bound (as EMQX does), and the password check of emqx_passwd.erl,
which compares the lowercase hex of PBKDF2(mac_fun, password, salt column bytes,
iterations, dk_length) with the password_hash column.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.errors import InsufficientPrivilege
from psycopg.rows import dict_row
from pydantic import SecretStr

from fieldline.domain.topics import TopicScheme
from fieldline.storage import devices as device_store
from fieldline.storage.broker_auth import (
    EMQX_AUTHN_QUERY,
    EMQX_AUTHZ_QUERY,
    TOPIC_PREFIX_SETTING,
)
from fieldline.storage.db import Row
from tests.api.conftest import ADMIN_PASSWORD, Api
from tests.api.conftest import api as api  # noqa: PLC0414  (the fixture, shared)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "brokers.md"
# The emqx.conf settings docs/brokers.md gives: pbkdf2, sha512, dk_length 64, and
# iterations = FIELDLINE_DEVICE_HASH_ITERATIONS (the api fixture sets 1000).
DK_LENGTH = 64


PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def bound(query: str) -> tuple[str, list[str]]:
    """An EMQX query with its placeholders as bound parameters, in order, as EMQX prepares
    it; and the placeholders' names."""
    names = PLACEHOLDER.findall(query)
    assert set(names) == {"username", "clientid"} and "%" not in query
    return PLACEHOLDER.sub("%s", query), names


async def emqx_query(
    conn: psycopg.AsyncConnection[Row], query: str, username: str, clientid: str | None = None
) -> list[Row]:
    """The query for a client connected as `username` under `clientid` (a device's own
    id unless given)."""
    sql, names = bound(query)
    values = {"username": username, "clientid": username if clientid is None else clientid}
    return await (await conn.execute(sql, [values[n] for n in names], prepare=True)).fetchall()


def emqx_pbkdf2_accepts(row: Row, password: str, *, iterations: int) -> bool:
    """emqx_passwd:check_pass({pbkdf2, sha512, Salt, Iterations, 64}, Hash, Password)."""
    derived = hashlib.pbkdf2_hmac("sha512", password.encode(), row["salt"], iterations, DK_LENGTH)
    return derived.hex() == row["password_hash"]


async def register(api: Api, device_id: str) -> str:
    admin = await api.login("admin", ADMIN_PASSWORD)
    created = await api.http.post("/api/v1/devices", headers=admin, json={"device_id": device_id})
    assert created.status_code == 201, created.text
    password: str = created.json()["mqtt"]["password"]
    return password


async def set_enabled(api: Api, device_id: str, enabled: bool) -> None:
    admin = await api.login("admin", ADMIN_PASSWORD)
    changed = await api.http.patch(
        f"/api/v1/devices/{device_id}", headers=admin, json={"enabled": enabled}
    )
    assert changed.status_code == 200, changed.text


def expected_acl(topics: TopicScheme, device_id: str) -> set[tuple[str, str, str]]:
    return {("allow", "publish", t) for t in topics.device_publishes(device_id)} | {
        ("allow", "subscribe", t) for t in topics.device_subscribes(device_id)
    }


def acl_rows(rows: list[Row]) -> set[tuple[str, str, str]]:
    found = {(row["permission"], row["action"], row["topic"]) for row in rows}
    assert len(found) == len(rows), "duplicate rules"
    return found


@pytest.fixture
async def emqx_role(api: Api) -> AsyncIterator[str]:
    """Connection string of a role set up as docs/brokers.md sets up EMQX's."""
    role, password = f"emqx_{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    async with api.pool.connection() as conn:
        dbname = conn.info.dbname
        await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await conn.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO {role}')
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        await conn.execute(f"GRANT SELECT ON emqx_mqtt_user, emqx_acl TO {role}")
    try:
        yield make_conninfo(api.url, user=role, password=password)
    finally:
        async with api.pool.connection() as conn:
            await conn.execute(f"DROP OWNED BY {role}")
            await conn.execute(f"DROP ROLE {role}")


async def test_authn_row_verifies_with_emqx_pbkdf2(api: Api) -> None:
    password = await register(api, "greenhouse-7")
    iterations = api.context.settings.device_hash_iterations
    async with api.pool.connection() as conn:
        [row] = await emqx_query(conn, EMQX_AUTHN_QUERY, "greenhouse-7")
    assert set(row) == {"password_hash", "salt", "is_superuser"}
    assert row["is_superuser"] is False
    assert isinstance(row["salt"], bytes) and len(row["salt"]) == 12
    # EMQX compares byte for byte with its own lowercase hex.
    assert len(row["password_hash"]) == 2 * DK_LENGTH
    assert row["password_hash"] == row["password_hash"].lower()
    assert emqx_pbkdf2_accepts(row, password, iterations=iterations)
    for wrong in ("", password[:-1], password.upper(), await register(api, "other")):
        assert not emqx_pbkdf2_accepts(row, wrong, iterations=iterations)
    # EMQX's iteration count must be fieldline's: any other count fails.
    assert not emqx_pbkdf2_accepts(row, password, iterations=iterations + 1)


async def test_authn_row_follows_rotation_disable_and_delete(api: Api) -> None:
    old = await register(api, "greenhouse-7")
    iterations = api.context.settings.device_hash_iterations
    admin = await api.login("admin", ADMIN_PASSWORD)
    rotated = await api.http.post("/api/v1/devices/greenhouse-7/credentials", headers=admin)
    new = rotated.json()["mqtt"]["password"]
    async with api.pool.connection() as conn:
        [row] = await emqx_query(conn, EMQX_AUTHN_QUERY, "greenhouse-7")
        assert emqx_pbkdf2_accepts(row, new, iterations=iterations)
        assert not emqx_pbkdf2_accepts(row, old, iterations=iterations)

        # No row: EMQX's PostgreSQL authenticator answers `ignore`, and the chain ends in a
        # refusal (docs/brokers.md chains only the service account before it).
        await set_enabled(api, "greenhouse-7", False)
        assert await emqx_query(conn, EMQX_AUTHN_QUERY, "greenhouse-7") == []
        assert await emqx_query(conn, EMQX_AUTHZ_QUERY, "greenhouse-7") == []
        await set_enabled(api, "greenhouse-7", True)
        assert len(await emqx_query(conn, EMQX_AUTHN_QUERY, "greenhouse-7")) == 1

        assert (await api.http.delete("/api/v1/devices/greenhouse-7", headers=admin)).is_success
        assert await emqx_query(conn, EMQX_AUTHN_QUERY, "greenhouse-7") == []
        assert await emqx_query(conn, EMQX_AUTHZ_QUERY, "greenhouse-7") == []
        assert await emqx_query(conn, EMQX_AUTHN_QUERY, "") == []


async def test_a_device_has_rows_only_under_its_own_client_id(api: Api) -> None:
    """Under another client id a device would take over that client's session."""
    await register(api, "greenhouse-7")
    await register(api, "greenhouse-8")
    async with api.pool.connection() as conn:
        for query in (EMQX_AUTHN_QUERY, EMQX_AUTHZ_QUERY):
            assert await emqx_query(conn, query, "greenhouse-7")
            for clientid in ("greenhouse-8", "", "fieldline-ingest-1", "GREENHOUSE-7"):
                assert await emqx_query(conn, query, "greenhouse-7", clientid) == []
        # A device under one of fieldline's own client ids (registered before they were
        # refused) gets no row at all.
        credentials = await conn.execute(
            "SELECT secret_hash FROM device_credentials WHERE device_id = 'greenhouse-7'"
        )
        [credential] = await credentials.fetchall()
        await device_store.create_device(
            conn,
            device_id="fieldline-ingest-1",
            name="",
            device_type="",
            group=None,
            metadata={},
            secret_hash=credential["secret_hash"],
        )
        for query in (EMQX_AUTHN_QUERY, EMQX_AUTHZ_QUERY):
            assert await emqx_query(conn, query, "fieldline-ingest-1") == []


async def test_malformed_secret_is_left_out_not_an_error(api: Api) -> None:
    password = await register(api, "good")
    async with api.pool.connection() as conn:
        for device_id, secret_hash in (
            ("plain", "hunter2"),
            ("bad-base64", "pbkdf2_sha512$1000$@@@@$AAAA"),
            ("bad-padding", "pbkdf2_sha512$1000$QUJD$QUJ"),
            ("huge-count", "pbkdf2_sha512$99999999999$QUJD$QUJD"),
            ("other-algo", "pbkdf2_sha256$1000$QUJD$QUJD"),
        ):
            await device_store.create_device(
                conn,
                device_id=device_id,
                name="",
                device_type="",
                group=None,
                metadata={},
                secret_hash=secret_hash,
            )
            assert await emqx_query(conn, EMQX_AUTHN_QUERY, device_id) == []
        [row] = await emqx_query(conn, EMQX_AUTHN_QUERY, "good")
        # The whole view still reads, bad rows and all.
        count = await (await conn.execute("SELECT count(*) AS n FROM emqx_mqtt_user")).fetchone()
    assert count == {"n": 1}
    assert emqx_pbkdf2_accepts(
        row, password, iterations=api.context.settings.device_hash_iterations
    )


async def test_acl_rows_are_exactly_the_device_contract(api: Api) -> None:
    for device_id in ("greenhouse-7", "greenhouse-8", "barn:2.b_c-d"):
        await register(api, device_id)
    await set_enabled(api, "greenhouse-8", False)
    topics = TopicScheme()
    async with api.pool.connection() as conn:
        for device_id in ("greenhouse-7", "barn:2.b_c-d"):
            rows = await emqx_query(conn, EMQX_AUTHZ_QUERY, device_id)
            assert set(rows[0]) == {"permission", "action", "topic"}
            assert acl_rows(rows) == expected_acl(topics, device_id)
            # Literal topics only: EMQX then matches a subscription filter exactly, so
            # `devices/+/commands` or `#` matches no rule and `no_match = deny` refuses it.
            assert not [r for r in rows if {"+", "#"} & set(r["topic"]) or " " in r["topic"]]
        assert await emqx_query(conn, EMQX_AUTHZ_QUERY, "greenhouse-8") == []
        assert await emqx_query(conn, EMQX_AUTHZ_QUERY, "nobody") == []


async def test_acl_rows_agree_with_the_http_authorizer(api: Api) -> None:
    """Both EMQX variants give a device the same rights."""
    secret = "agree-8Hq3zK1wPx"
    api.reconfigure(emqx_webhook_secret=SecretStr(secret))
    await register(api, "greenhouse-7")
    async with api.pool.connection() as conn:
        rows = await emqx_query(conn, EMQX_AUTHZ_QUERY, "greenhouse-7")
    assert rows
    for row in rows:
        flipped = "subscribe" if row["action"] == "publish" else "publish"
        for action, expected in ((row["action"], "allow"), (flipped, "deny")):
            answer = await api.http.post(
                "/emqx/authz",
                headers={"Authorization": f"Bearer {secret}"},
                json={
                    "username": "greenhouse-7",
                    "clientid": "greenhouse-7",
                    "action": action,
                    "topic": row["topic"],
                },
            )
            assert answer.json() == {"result": expected}, (action, row["topic"])


async def test_emqx_role_reads_the_views_and_nothing_else(api: Api, emqx_role: str) -> None:
    password = await register(api, "greenhouse-7")
    async with await psycopg.AsyncConnection.connect(emqx_role, row_factory=dict_row) as conn:
        [row] = await emqx_query(conn, EMQX_AUTHN_QUERY, "greenhouse-7")
        assert emqx_pbkdf2_accepts(
            row, password, iterations=api.context.settings.device_hash_iterations
        )
        rows = await emqx_query(conn, EMQX_AUTHZ_QUERY, "greenhouse-7")
        assert acl_rows(rows) == expected_acl(TopicScheme(), "greenhouse-7")
        for table in ("device_credentials", "devices", "users"):
            with pytest.raises(InsufficientPrivilege):
                await conn.execute(f"SELECT * FROM {table}")
            await conn.rollback()


async def test_topic_prefix_comes_from_the_emqx_role_setting(api: Api, emqx_role: str) -> None:
    await register(api, "greenhouse-7")
    user = conninfo_to_dict(emqx_role)["user"]
    async with api.pool.connection() as conn:
        await conn.execute(f"ALTER ROLE {user} SET {TOPIC_PREFIX_SETTING} = 'farm'")
    async with await psycopg.AsyncConnection.connect(emqx_role, row_factory=dict_row) as conn:
        rows = await emqx_query(conn, EMQX_AUTHZ_QUERY, "greenhouse-7")
    assert acl_rows(rows) == expected_acl(TopicScheme("farm"), "greenhouse-7")


def test_docs_give_emqx_these_exact_queries() -> None:
    text = DOCS.read_text()
    for query in (EMQX_AUTHN_QUERY, EMQX_AUTHZ_QUERY):
        assert f'query = "{query}"' in text
