"""The rejected-message store, read side (the writer stores them with each batch)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection

from fieldline.storage.db import Row
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]


@dataclass(frozen=True, slots=True)
class StoredRejection:
    id: int
    received_at: datetime
    device_id: str | None
    topic: str
    reason: str
    detail: str
    payload: bytes


async def list_rejected(
    conn: Conn,
    *,
    device_id: str | None,
    reason: str | None,
    since: datetime | None,
    limit: int,
    cursor: str | None,
) -> Page[StoredRejection]:
    """Newest first."""
    before = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            "SELECT id, received_at, device_id, topic, reason, detail, payload"
            " FROM rejected_messages"
            " WHERE (%(device)s::text IS NULL OR device_id = %(device)s::text)"
            " AND (%(reason)s::text IS NULL OR reason = %(reason)s::text)"
            " AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s::timestamptz)"
            " AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)"
            " ORDER BY id DESC LIMIT %(limit)s",
            {
                "device": device_id,
                "reason": reason,
                "since": since,
                "before": before[0] if before else None,
                "limit": limit + 1,
            },
        )
    ).fetchall()
    items = [StoredRejection(**{**row, "payload": bytes(row["payload"])}) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)
