"""The outbox: notifications waiting for, or done with, delivery, and every attempt made.

The dispatcher reads a channel's head (its oldest pending row), sends it with no
transaction open, then records the outcome in one short transaction. Delivery is at
least once: a worker stopped between a send and its record sends that row again, with
the same idempotency key, which receivers use to drop the repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection

from fieldline.storage.db import Row
from fieldline.storage.notification_channels import NotificationChannel
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]


@dataclass(frozen=True, slots=True)
class Head:
    """A channel's pending notification, due now (sent once those before it are)."""

    id: int
    channel_id: int
    event: str
    idempotency_key: str
    body: bytes  # as stored, byte for byte: what a webhook signs
    attempts: int


@dataclass(frozen=True, slots=True)
class Attempt:
    at: datetime
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    alert_id: int | None
    channel_id: int
    channel_name: str
    event: str
    idempotency_key: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_log: list[Attempt]


async def due_channels(conn: Conn) -> list[NotificationChannel]:
    """Enabled channels whose head is due (a head waiting on its backoff holds its channel)."""
    rows = await (
        await conn.execute(
            "SELECT c.id, c.name, c.type, c.config, c.enabled, c.failing_since, c.last_error,"
            " c.created_at, c.updated_at"
            " FROM notification_channels c"
            " CROSS JOIN LATERAL (SELECT n.next_attempt_at FROM notifications n"
            "   WHERE n.channel_id = c.id AND n.status = 'pending' ORDER BY n.id LIMIT 1) head"
            " WHERE c.enabled AND head.next_attempt_at <= now() ORDER BY c.id"
        )
    ).fetchall()
    return [NotificationChannel(**row) for row in rows]


async def due_heads(conn: Conn, channel_id: int, limit: int) -> list[Head]:
    """The channel's oldest pending rows, in id order, while due: its head first (a head
    waiting on its backoff holds back the rest), at most `limit`."""
    rows = await (
        await conn.execute(
            "SELECT id, channel_id, event, idempotency_key, body::text AS body, attempts,"
            " next_attempt_at <= now() AS due"
            " FROM notifications WHERE channel_id = %s AND status = 'pending'"
            " ORDER BY id LIMIT %s",
            (channel_id, limit),
        )
    ).fetchall()
    heads = []
    for row in rows:
        if not row.pop("due"):
            break
        heads.append(Head(**{**row, "body": row["body"].encode()}))
    return heads


async def record_attempt(
    conn: Conn,
    head: Head,
    *,
    ok: bool,
    status_code: int | None,
    error: str | None,
    duration_ms: float,
    retry_in: float,
    give_up_after: float,
) -> str | None:
    """The attempt, and the row's new status (delivered, pending again in `retry_in`
    seconds, or failed once older than `give_up_after` seconds), in one statement.
    None when the row was no longer this head (another party recorded it)."""
    row = await (
        await conn.execute(
            "WITH done AS (UPDATE notifications SET attempts = attempts + 1,"
            " status = CASE WHEN %(ok)s THEN 'delivered'"
            "   WHEN created_at <= now() - make_interval(secs => %(give_up)s) THEN 'failed'"
            "   ELSE 'pending' END,"
            " delivered_at = CASE WHEN %(ok)s THEN now() END,"
            " last_error = %(error)s,"
            " next_attempt_at = CASE WHEN %(ok)s THEN next_attempt_at"
            "   ELSE now() + make_interval(secs => %(retry_in)s) END"
            " WHERE id = %(id)s AND status = 'pending' AND attempts = %(attempts)s"
            " RETURNING id, status),"
            " attempt AS (INSERT INTO notification_attempts (notification_id, ok, status_code,"
            "  error, duration_ms) SELECT id, %(ok)s, %(code)s, %(error)s, %(ms)s FROM done)"
            " SELECT status FROM done",
            {
                "id": head.id,
                "attempts": head.attempts,
                "ok": ok,
                "code": status_code,
                "error": error,
                "ms": duration_ms,
                "retry_in": retry_in,
                "give_up": give_up_after,
            },
        )
    ).fetchone()
    if row is None:
        return None
    status: str = row["status"]
    return status


async def channel_failed(conn: Conn, channel_id: int, error: str, *, failing: bool) -> None:
    """last_error is the newest failure's; failing_since is set (once) when the channel is
    declared failing, when its channel alert opens, so that one failure retried at once
    does not mark it."""
    await conn.execute(
        "UPDATE notification_channels SET last_error = %s,"
        " failing_since = CASE WHEN %s THEN coalesce(failing_since, now()) ELSE failing_since END"
        " WHERE id = %s",
        (error, failing, channel_id),
    )


async def channel_recovered(conn: Conn, channel_id: int) -> bool:
    """A delivery clears failing_since and last_error; whether they were set."""
    cursor = await conn.execute(
        "UPDATE notification_channels SET failing_since = NULL, last_error = NULL"
        " WHERE id = %s AND (failing_since IS NOT NULL OR last_error IS NOT NULL)",
        (channel_id,),
    )
    return cursor.rowcount > 0


@dataclass(frozen=True, slots=True)
class ChannelAlert:
    id: int
    transitions: int
    started_at: datetime
    resolved_at: datetime | None


_ALERT_COLUMNS = "id, transitions, started_at, resolved_at"


async def open_channel_alert(conn: Conn, channel_id: int, name: str) -> ChannelAlert | None:
    """The alert of a failing channel, opened now; None if one is open already."""
    row = await (
        await conn.execute(
            "INSERT INTO alerts (kind, rule_name, channel_id, severity, started_at, transitions)"
            " VALUES ('channel', %s, %s, 'critical', now(), 1)"
            " ON CONFLICT (channel_id) WHERE state <> 'resolved' AND kind = 'channel'"
            f" DO NOTHING RETURNING {_ALERT_COLUMNS}",
            (f'notification channel "{name}" failing', channel_id),
        )
    ).fetchone()
    return ChannelAlert(**row) if row else None


async def resolve_channel_alert(conn: Conn, channel_id: int, reason: str) -> ChannelAlert | None:
    """Resolve the channel's open alert, if it has one (its next transition)."""
    row = await (
        await conn.execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_reason = %s,"
            " transitions = transitions + 1"
            " WHERE kind = 'channel' AND channel_id = %s AND state <> 'resolved'"
            f" RETURNING {_ALERT_COLUMNS}",
            (reason, channel_id),
        )
    ).fetchone()
    return ChannelAlert(**row) if row else None


async def pending_count(conn: Conn) -> int:
    row = await (
        await conn.execute("SELECT count(*) AS n FROM notifications WHERE status = 'pending'")
    ).fetchone()
    return int(row["n"]) if row else 0


async def list_notifications(
    conn: Conn,
    *,
    alert_id: int | None,
    channel_id: int | None,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> Page[Notification]:
    """Newest first, each with its attempts oldest first."""
    before = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            "SELECT n.id, n.alert_id, n.channel_id, c.name AS channel_name, n.event,"
            " n.idempotency_key, n.status, n.attempts, n.next_attempt_at, n.last_error,"
            " n.created_at, n.delivered_at,"
            " coalesce((SELECT json_agg(json_build_object('at', a.at, 'ok', a.ok,"
            "   'status_code', a.status_code, 'error', a.error, 'duration_ms', a.duration_ms)"
            "   ORDER BY a.id) FROM notification_attempts a WHERE a.notification_id = n.id),"
            "   '[]'::json) AS attempt_log"
            " FROM notifications n JOIN notification_channels c ON c.id = n.channel_id"
            " WHERE (%(alert)s::bigint IS NULL OR n.alert_id = %(alert)s::bigint)"
            " AND (%(channel)s::bigint IS NULL OR n.channel_id = %(channel)s::bigint)"
            " AND (%(status)s::text IS NULL OR n.status = %(status)s::text)"
            " AND (%(before)s::bigint IS NULL OR n.id < %(before)s::bigint)"
            " ORDER BY n.id DESC LIMIT %(limit)s",
            {
                "alert": alert_id,
                "channel": channel_id,
                "status": status,
                "before": before[0] if before else None,
                "limit": limit + 1,
            },
        )
    ).fetchall()
    items = [
        Notification(
            **{
                **row,
                "attempt_log": [
                    Attempt(**{**a, "at": datetime.fromisoformat(a["at"])})
                    for a in row["attempt_log"]
                ],
            }
        )
        for row in rows[:limit]
    ]
    return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)
