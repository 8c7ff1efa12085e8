"""Notification channels: where alerts are sent. Configs hold secrets; the API redacts them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.types.json import Json

from fieldline.storage.db import Row
from fieldline.storage.errors import AlreadyExistsError, InUseError, NotFoundError
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]

_COLUMNS = "id, name, type, config, enabled, failing_since, last_error, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class NotificationChannel:
    id: int
    name: str
    type: str
    config: dict[str, Any]  # secrets included
    enabled: bool
    failing_since: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


async def create_channel(
    conn: Conn, *, name: str, kind: str, config: dict[str, Any], enabled: bool
) -> NotificationChannel:
    try:
        row = await (
            await conn.execute(
                "INSERT INTO notification_channels (name, type, config, enabled)"
                f" VALUES (%s, %s, %s, %s) RETURNING {_COLUMNS}",
                (name, kind, Json(config), enabled),
            )
        ).fetchone()
    except UniqueViolation as exc:
        raise AlreadyExistsError(f"a notification channel named {name!r} exists") from exc
    assert row is not None
    return NotificationChannel(**row)


async def get_channel(conn: Conn, channel_id: int, *, lock: bool = False) -> NotificationChannel:
    row = await (
        await conn.execute(
            f"SELECT {_COLUMNS} FROM notification_channels WHERE id = %s"
            + (" FOR UPDATE" if lock else ""),
            (channel_id,),
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no notification channel {channel_id}")
    return NotificationChannel(**row)


async def list_channels(conn: Conn, *, limit: int, cursor: str | None) -> Page[NotificationChannel]:
    after = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            f"SELECT {_COLUMNS} FROM notification_channels"
            " WHERE (%(after)s::bigint IS NULL OR id > %(after)s::bigint)"
            " ORDER BY id LIMIT %(limit)s",
            {"after": after[0] if after else None, "limit": limit + 1},
        )
    ).fetchall()
    items = [NotificationChannel(**row) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)


async def update_channel(
    conn: Conn,
    channel_id: int,
    *,
    name: str | None,
    config: dict[str, Any] | None,
    enabled: bool | None,
) -> NotificationChannel:
    try:
        row = await (
            await conn.execute(
                "UPDATE notification_channels SET"
                " name = coalesce(%(name)s::text, name),"
                " config = coalesce(%(config)s::json, config),"
                " enabled = coalesce(%(enabled)s::boolean, enabled),"
                # A disabled channel is not failing: nothing is tried on it.
                " failing_since = CASE WHEN %(enabled)s::boolean IS FALSE THEN NULL"
                "   ELSE failing_since END,"
                " updated_at = now()"
                f" WHERE id = %(id)s RETURNING {_COLUMNS}",
                {
                    "id": channel_id,
                    "name": name,
                    "config": Json(config) if config is not None else None,
                    "enabled": enabled,
                },
            )
        ).fetchone()
    except UniqueViolation as exc:
        raise AlreadyExistsError(f"a notification channel named {name!r} exists") from exc
    if row is None:
        raise NotFoundError(f"no notification channel {channel_id}")
    return NotificationChannel(**row)


async def delete_channel(conn: Conn, channel_id: int) -> NotificationChannel:
    """Inside a transaction: refused while a rule names the channel (InUseError)."""
    channel = await get_channel(conn, channel_id, lock=True)
    rules = await (
        await conn.execute(
            "SELECT id, name FROM alert_rules"
            " WHERE %(id)s = ANY(channels) OR %(id)s = ANY(escalate_channels) ORDER BY id",
            {"id": channel_id},
        )
    ).fetchall()
    if rules:
        names = ", ".join(f"{row['name']!r} (id {row['id']})" for row in rules[:5])
        more = f" and {len(rules) - 5} more" if len(rules) > 5 else ""
        raise InUseError(
            f"notification channel {channel.name!r} is named by alert rules {names}{more}:"
            " take it out of their channels and escalate_channels first"
        )
    await conn.execute("DELETE FROM notification_channels WHERE id = %s", (channel_id,))
    return channel


async def enabled_channel_ids(conn: Conn, *, excluding: int | None = None) -> list[int]:
    rows = await (
        await conn.execute(
            "SELECT id FROM notification_channels WHERE enabled AND id IS DISTINCT FROM %s"
            " ORDER BY id",
            (excluding,),
        )
    ).fetchall()
    return [row["id"] for row in rows]
