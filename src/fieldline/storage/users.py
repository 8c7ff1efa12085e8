"""Users and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation

from fieldline.domain.users import ApiKey, Role, User
from fieldline.storage.db import Row
from fieldline.storage.errors import AlreadyExistsError, NotFoundError
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]


def _user(row: Row) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        role=Role(row["role"]),
        created_at=row["created_at"],
        token_version=row["token_version"],
    )


async def create_user(conn: Conn, *, username: str, password_hash: str, role: Role) -> User:
    try:
        row = await (
            await conn.execute(
                "INSERT INTO users (username, password_hash, role) VALUES (%s, %s, %s) RETURNING *",
                (username, password_hash, role.value),
            )
        ).fetchone()
    except UniqueViolation as exc:
        raise AlreadyExistsError(f"user {username!r} already exists") from exc
    assert row is not None
    return _user(row)


async def get_user(conn: Conn, user_id: int) -> User:
    row = await (await conn.execute("SELECT * FROM users WHERE id = %s", (user_id,))).fetchone()
    if row is None:
        raise NotFoundError(f"user {user_id} does not exist")
    return _user(row)


async def token_holder(conn: Conn, user_id: int, session_id: str) -> tuple[User, bool]:
    """The user a token names, and whether its session was signed out: one query, as
    every request authenticated by a token makes it."""
    row = await (
        await conn.execute(
            "SELECT u.*, EXISTS (SELECT 1 FROM revoked_sessions r WHERE r.session_id = %s)"
            " AS session_revoked FROM users u WHERE u.id = %s",
            (session_id, user_id),
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"user {user_id} does not exist")
    return _user(row), bool(row["session_revoked"])


async def credentials_of(conn: Conn, username: str) -> tuple[User, str] | None:
    """The user and their stored password hash, for login."""
    row = await (
        await conn.execute("SELECT * FROM users WHERE username = %s", (username,))
    ).fetchone()
    return (_user(row), row["password_hash"]) if row else None


async def list_users(conn: Conn, *, limit: int, cursor: str | None) -> Page[User]:
    after = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            "SELECT * FROM users WHERE %(after)s::bigint IS NULL OR id > %(after)s::bigint"
            " ORDER BY id LIMIT %(limit)s",
            {"after": after[0] if after else None, "limit": limit + 1},
        )
    ).fetchall()
    items = [_user(row) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)


async def update_user(
    conn: Conn, user_id: int, changes: dict[str, Any], *, end_sessions: bool
) -> User:
    """Apply `changes` (role, password_hash); `end_sessions` ends every token issued so far."""
    assignments = [f"{k} = %({k})s" for k in ("role", "password_hash") if k in changes]
    assignments.append("updated_at = now()")
    if end_sessions:
        assignments.append("token_version = token_version + 1")
    values = {k: (v.value if isinstance(v, Role) else v) for k, v in changes.items()}
    cursor = await conn.execute(
        f"UPDATE users SET {', '.join(assignments)} WHERE id = %(id)s", {**values, "id": user_id}
    )
    if cursor.rowcount == 0:
        raise NotFoundError(f"user {user_id} does not exist")
    return await get_user(conn, user_id)


async def end_sessions(conn: Conn, user_id: int) -> User:
    """End every access and refresh token of the user ("sign out everywhere")."""
    return await update_user(conn, user_id, {}, end_sessions=True)


# Each sign-out deletes at most this many sessions whose tokens have expired anyway.
SWEEP_PER_SIGN_OUT = 10


async def revoke_session(conn: Conn, session_id: str, *, expires_at: datetime) -> None:
    """End one session (a sign-out), remembered until its refresh token would expire."""
    await conn.execute(
        "INSERT INTO revoked_sessions (session_id, expires_at) VALUES (%s, %s)"
        " ON CONFLICT (session_id) DO NOTHING",
        (session_id, expires_at),
    )
    await conn.execute(
        "DELETE FROM revoked_sessions WHERE session_id = ANY(ARRAY("
        " SELECT session_id FROM revoked_sessions WHERE expires_at < now() LIMIT %s"
        " FOR UPDATE SKIP LOCKED))",
        (SWEEP_PER_SIGN_OUT,),
    )


async def delete_user(conn: Conn, user_id: int) -> None:
    cursor = await conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
    if cursor.rowcount == 0:
        raise NotFoundError(f"user {user_id} does not exist")


async def count_admins(conn: Conn) -> int:
    row = await (
        await conn.execute("SELECT count(*) AS n FROM users WHERE role = 'admin'")
    ).fetchone()
    return int(row["n"]) if row else 0


def _api_key(row: Row) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        user_id=row["user_id"],
        name=row["name"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


async def create_api_key(
    conn: Conn, *, key_id: str, user_id: int, name: str, secret_hash: str
) -> ApiKey:
    row = await (
        await conn.execute(
            "INSERT INTO api_keys (key_id, user_id, name, secret_hash) VALUES (%s, %s, %s, %s)"
            " RETURNING *",
            (key_id, user_id, name, secret_hash),
        )
    ).fetchone()
    assert row is not None
    return _api_key(row)


async def api_key_secret(conn: Conn, key_id: str) -> tuple[ApiKey, str] | None:
    """A live (not revoked) key and its stored hash."""
    row = await (
        await conn.execute(
            "SELECT * FROM api_keys WHERE key_id = %s AND revoked_at IS NULL", (key_id,)
        )
    ).fetchone()
    return (_api_key(row), row["secret_hash"]) if row else None


async def touch_api_key(conn: Conn, key_id: str) -> None:
    await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE key_id = %s", (key_id,))


async def list_api_keys(conn: Conn, *, user_id: int | None) -> list[ApiKey]:
    rows = await (
        await conn.execute(
            "SELECT * FROM api_keys WHERE %(user)s::bigint IS NULL OR user_id = %(user)s::bigint"
            " ORDER BY created_at",
            {"user": user_id},
        )
    ).fetchall()
    return [_api_key(row) for row in rows]


async def revoke_api_key(conn: Conn, key_id: str, *, user_id: int | None) -> None:
    cursor = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = %(key)s AND revoked_at IS NULL"
        " AND (%(user)s::bigint IS NULL OR user_id = %(user)s::bigint)",
        {"key": key_id, "user": user_id},
    )
    if cursor.rowcount == 0:
        raise NotFoundError(f"API key {key_id!r} does not exist")
