"""Users and API keys."""

from __future__ import annotations

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
        id=row["id"], username=row["username"], role=Role(row["role"]), created_at=row["created_at"]
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


async def update_user(conn: Conn, user_id: int, changes: dict[str, Any]) -> User:
    """Apply `changes` (role, password_hash)."""
    assignments = [f"{k} = %({k})s" for k in ("role", "password_hash") if k in changes]
    assignments.append("updated_at = now()")
    values = {k: (v.value if isinstance(v, Role) else v) for k, v in changes.items()}
    cursor = await conn.execute(
        f"UPDATE users SET {', '.join(assignments)} WHERE id = %(id)s", {**values, "id": user_id}
    )
    if cursor.rowcount == 0:
        raise NotFoundError(f"user {user_id} does not exist")
    return await get_user(conn, user_id)


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
