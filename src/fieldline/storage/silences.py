"""Silences (SPEC §6): a device, a group or a rule muted until a time, with a reason.

An alert that a silence covers is still recorded; its notifications are kept as
`suppressed` (the evaluator reads the silences; this module writes and lists them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection

from fieldline.storage.db import Row
from fieldline.storage.errors import NotFoundError
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]


class SilenceTargetError(ValueError):
    """The device, group or rule a silence was to mute does not exist."""


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    device_id: str | None
    group_name: str | None
    rule_id: int | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime
    active: bool  # starts_at <= now < ends_at, by the database's clock


_COLUMNS = "*, (starts_at <= now() AND now() < ends_at) AS active"

# What each kind of target must exist as (the target's column, its table and key).
_TARGETS = {
    "device_id": ("devices", "device_id", "device"),
    "group_name": ("groups", "name", "group"),
    "rule_id": ("alert_rules", "id", "alert rule"),
}


async def create_silence(
    conn: Conn,
    *,
    target: str,
    value: str | int,
    starts_at: datetime | None,
    ends_at: datetime,
    reason: str,
    created_by: str,
) -> Silence:
    """`target` is device_id, group_name or rule_id; it must exist (SilenceTargetError).
    `starts_at` None: now."""
    table, key, noun = _TARGETS[target]
    found = await (
        await conn.execute(f"SELECT 1 FROM {table} WHERE {key} = %s FOR KEY SHARE", (value,))
    ).fetchone()
    if found is None:
        raise SilenceTargetError(f"{noun} {value!r} does not exist")
    row = await (
        await conn.execute(
            f"INSERT INTO silences ({target}, starts_at, ends_at, reason, created_by)"
            f" VALUES (%s, coalesce(%s, now()), %s, %s, %s) RETURNING {_COLUMNS}",
            (value, starts_at, ends_at, reason, created_by),
        )
    ).fetchone()
    assert row is not None
    return Silence(**row)


async def list_silences(
    conn: Conn, *, active: bool | None, limit: int, cursor: str | None
) -> Page[Silence]:
    """Newest first; `active` keeps only those in force now (True) or not (False)."""
    before = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            f"SELECT {_COLUMNS} FROM silences"
            " WHERE (%(active)s::boolean IS NULL"
            "  OR (starts_at <= now() AND now() < ends_at) = %(active)s::boolean)"
            " AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)"
            " ORDER BY id DESC LIMIT %(limit)s",
            {"active": active, "before": before[0] if before else None, "limit": limit + 1},
        )
    ).fetchall()
    items = [Silence(**row) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)


async def delete_silence(conn: Conn, silence_id: int) -> Silence:
    """Remove the silence; answer what it was."""
    row = await (
        await conn.execute(
            f"DELETE FROM silences WHERE id = %s RETURNING {_COLUMNS}", (silence_id,)
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"silence {silence_id} does not exist")
    return Silence(**row)
