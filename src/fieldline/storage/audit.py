"""The audit log: who created, changed, disabled, deleted, provisioned or commanded what.

`record` takes the connection the change itself uses, so inside the change's
transaction the entry and the change commit (or fail) together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from fieldline.storage.db import Row
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    time: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    detail: dict[str, Any]


def user_actor(username: str) -> str:
    return f"user:{username}"


def device_actor(device_id: str) -> str:
    return f"device:{device_id}"


def provisioning_key_actor(key_id: str) -> str:
    return f"provisioning-key:{key_id}"


def address_actor(address: str) -> str:
    """A client known only by its address (failed credentials, api/auth_limits.py)."""
    return f"address:{address}"


SYSTEM_ACTOR = "system"


async def record(
    conn: Conn,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, target_type, target_id, detail)"
        " VALUES (%s, %s, %s, %s, %s)",
        (actor, action, target_type, target_id, Jsonb(detail or {})),
    )


async def list_entries(
    conn: Conn,
    *,
    actor: str | None,
    action: str | None,
    target_type: str | None,
    target_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page[AuditEntry]:
    """Newest first."""
    before = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            "SELECT id, time, actor, action, target_type, target_id, detail FROM audit_log"
            " WHERE (%(actor)s::text IS NULL OR actor = %(actor)s::text)"
            " AND (%(action)s::text IS NULL OR action = %(action)s::text)"
            " AND (%(type)s::text IS NULL OR target_type = %(type)s::text)"
            " AND (%(target)s::text IS NULL OR target_id = %(target)s::text)"
            " AND (%(since)s::timestamptz IS NULL OR time >= %(since)s::timestamptz)"
            " AND (%(until)s::timestamptz IS NULL OR time < %(until)s::timestamptz)"
            " AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)"
            " ORDER BY id DESC LIMIT %(limit)s",
            {
                "actor": actor,
                "action": action,
                "type": target_type,
                "target": target_id,
                "since": since,
                "until": until,
                "before": before[0] if before else None,
                "limit": limit + 1,
            },
        )
    ).fetchall()
    items = [AuditEntry(**row) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)
