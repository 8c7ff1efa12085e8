"""Provisioning keys, the signatures already used, and re-provisioning allowances."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from psycopg import AsyncConnection

from fieldline.storage.db import Row
from fieldline.storage.errors import GroupNotFoundError, NotFoundError
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]

_KEY_COLUMNS = (
    "k.key_id, k.name, g.name AS group_name, k.device_type, k.expires_at, k.max_uses, k.uses,"
    " k.created_by, k.created_at, k.last_used_at, k.revoked_at"
)


class KeyState(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class ProvisioningKey:
    key_id: str
    name: str
    group: str | None
    device_type: str | None
    expires_at: datetime | None
    max_uses: int | None
    uses: int
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> KeyState:
        """Why the key may not provision now (the first reason, in this order), or ACTIVE."""
        if self.revoked_at is not None:
            return KeyState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyState.EXPIRED
        if self.max_uses is not None and self.uses >= self.max_uses:
            return KeyState.EXHAUSTED
        return KeyState.ACTIVE


def _key(row: Row) -> ProvisioningKey:
    return ProvisioningKey(
        key_id=row["key_id"],
        name=row["name"],
        group=row["group_name"],
        device_type=row["device_type"],
        expires_at=row["expires_at"],
        max_uses=row["max_uses"],
        uses=row["uses"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


async def create_key(
    conn: Conn,
    *,
    key_id: str,
    name: str,
    group: str | None,
    device_type: str | None,
    expires_at: datetime | None,
    max_uses: int | None,
    sealed_secret: bytes,
    created_by: str,
) -> ProvisioningKey:
    """Insert a key; a `group` that does not exist inserts nothing and raises."""
    cursor = await conn.execute(
        "INSERT INTO provisioning_keys"
        " (key_id, name, group_id, device_type, expires_at, max_uses, sealed_secret, created_by)"
        " SELECT %(key_id)s, %(name)s, g.id, %(device_type)s, %(expires_at)s, %(max_uses)s,"
        " %(sealed)s, %(created_by)s"
        " FROM (SELECT 1) AS one LEFT JOIN groups g ON g.name = %(group)s::text"
        " WHERE %(group)s::text IS NULL OR g.id IS NOT NULL",
        {
            "key_id": key_id,
            "name": name,
            "group": group,
            "device_type": device_type,
            "expires_at": expires_at,
            "max_uses": max_uses,
            "sealed": sealed_secret,
            "created_by": created_by,
        },
    )
    if cursor.rowcount == 0:
        raise GroupNotFoundError(f"group {group!r} does not exist")
    found = await get_key(conn, key_id)
    assert found is not None
    return found[0]


async def get_key(conn: Conn, key_id: str) -> tuple[ProvisioningKey, bytes] | None:
    """The key and its sealed secret, or None when there is no such key."""
    row = await (
        await conn.execute(
            f"SELECT {_KEY_COLUMNS}, k.sealed_secret FROM provisioning_keys k"
            " LEFT JOIN groups g ON g.id = k.group_id WHERE k.key_id = %s",
            (key_id,),
        )
    ).fetchone()
    return None if row is None else (_key(row), bytes(row["sealed_secret"]))


async def list_keys(conn: Conn, *, limit: int, cursor: str | None) -> Page[ProvisioningKey]:
    after = decode_cursor(cursor, 1)
    after_id = str(after[0]) if after else None
    rows = await (
        await conn.execute(
            f"SELECT {_KEY_COLUMNS} FROM provisioning_keys k"
            " LEFT JOIN groups g ON g.id = k.group_id"
            " WHERE %(after)s::text IS NULL OR k.key_id > %(after)s::text"
            " ORDER BY k.key_id LIMIT %(limit)s",
            {"after": after_id, "limit": limit + 1},
        )
    ).fetchall()
    items = [_key(row) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].key_id) if len(rows) > limit else None)


async def revoke_key(conn: Conn, key_id: str) -> bool:
    """Revoke a key; answer False when it was revoked already. The key stays listed."""
    cursor = await conn.execute(
        "UPDATE provisioning_keys SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL",
        (key_id,),
    )
    if cursor.rowcount == 1:
        return True
    if await get_key(conn, key_id) is None:
        raise NotFoundError(f"provisioning key {key_id!r} does not exist")
    return False


async def use_key(conn: Conn, key_id: str, now: datetime) -> bool:
    """Count one use if the key is still usable at `now`; False when it is not.

    One statement, and the row stays locked until the caller's transaction ends:
    of two devices racing for a key's last use, one gets it and the other False.
    """
    cursor = await conn.execute(
        "UPDATE provisioning_keys SET uses = uses + 1, last_used_at = %(now)s"
        " WHERE key_id = %(key_id)s AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > %(now)s)"
        " AND (max_uses IS NULL OR uses < max_uses)",
        {"key_id": key_id, "now": now},
    )
    return cursor.rowcount == 1


async def remember_signature(
    conn: Conn, *, key_id: str, signature: str, signed_at: datetime
) -> bool:
    """Record a verified signature; False when it was seen before (a replay)."""
    cursor = await conn.execute(
        "INSERT INTO provisioning_signatures (signature, key_id, signed_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (signature) DO NOTHING",
        (signature, key_id, signed_at),
    )
    return cursor.rowcount == 1


async def allow_reprovision(
    conn: Conn, device_id: str, *, allowed_by: str, expires_at: datetime
) -> None:
    """Let an existing device provision itself once more until `expires_at`."""
    cursor = await conn.execute(
        "INSERT INTO reprovision_allowances (device_id, allowed_by, expires_at)"
        " SELECT device_id, %(by)s, %(until)s FROM devices WHERE device_id = %(device_id)s"
        " ON CONFLICT (device_id) DO UPDATE SET allowed_by = excluded.allowed_by,"
        " allowed_at = now(), expires_at = excluded.expires_at",
        {"device_id": device_id, "by": allowed_by, "until": expires_at},
    )
    if cursor.rowcount == 0:
        raise NotFoundError(f"device {device_id!r} does not exist")


async def take_reprovision_allowance(conn: Conn, device_id: str, now: datetime) -> bool:
    """Consume the device's allowance if one is valid at `now`; expired ones go too."""
    row = await (
        await conn.execute(
            "DELETE FROM reprovision_allowances WHERE device_id = %s"
            " RETURNING expires_at > %s AS ok",
            (device_id, now),
        )
    ).fetchone()
    return bool(row and row["ok"])
