"""Commands to devices: created by the API, delivered by the API or the worker's dispatcher,
answered through ingest (the one writer calls `apply_results` inside its batch).

Delivery locks the command's row while it publishes, so a command is sent by one
party only, and a result the device answers with at once waits for "sent" to commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Json

from fieldline.domain.commands import Command, CommandResult, CommandStatus, encode_json
from fieldline.domain.readings import Rejection, RejectReason
from fieldline.storage.db import Row
from fieldline.storage.errors import NotFoundError
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]

_COLUMNS = (
    "c.command_id, c.device_id, c.name, c.params, c.status, c.created_at, c.created_by,"
    " c.sent_at, c.completed_at, c.expires_at, c.result"
)
# Devices the dispatcher may deliver to: enabled, and online by the API's own rule.
_ONLINE_DEVICES = (
    "SELECT device_id FROM devices"
    " WHERE enabled AND status = 'online' AND last_seen >= %(online_since)s"
)


def _command(row: Row) -> Command:
    return Command(**{**row, "status": CommandStatus(row["status"])})


async def create_command(
    conn: Conn,
    *,
    device_id: str,
    name: str,
    params: dict[str, object],
    created_by: str,
    expires_in: timedelta,
) -> Command:
    row = await (
        await conn.execute(
            "INSERT INTO commands AS c (device_id, name, params, created_by, expires_at)"
            " VALUES (%s, %s, %s, %s, now() + %s)"
            f" RETURNING {_COLUMNS}",
            (device_id, name, Json(params, dumps=encode_json), created_by, expires_in),
        )
    ).fetchone()
    assert row is not None
    return _command(row)


async def get_command(conn: Conn, device_id: str, command_id: UUID) -> Command:
    row = await (
        await conn.execute(
            f"SELECT {_COLUMNS} FROM commands c WHERE c.command_id = %s AND c.device_id = %s",
            (command_id, device_id),
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"device {device_id!r} has no command {command_id}")
    return _command(row)


async def list_commands(
    conn: Conn,
    *,
    device_id: str,
    status: CommandStatus | None,
    limit: int,
    cursor: str | None,
) -> Page[Command]:
    """Newest first."""
    before = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            f"SELECT c.id, {_COLUMNS} FROM commands c WHERE c.device_id = %(device)s"
            " AND (%(status)s::text IS NULL OR c.status = %(status)s::text)"
            " AND (%(before)s::bigint IS NULL OR c.id < %(before)s::bigint)"
            " ORDER BY c.id DESC LIMIT %(limit)s",
            {
                "device": device_id,
                "status": status.value if status else None,
                "before": before[0] if before else None,
                "limit": limit + 1,
            },
        )
    ).fetchall()
    page = rows[:limit]
    items = [_command({k: v for k, v in row.items() if k != "id"}) for row in page]
    return Page(items, encode_cursor(page[-1]["id"]) if len(rows) > limit else None)


async def claim_if_next(conn: Conn, command_id: UUID) -> Command | None:
    """Lock a just-created command for sending, if it is still pending and unexpired, its
    device has no older pending command (the dispatcher sends those first, in order) and
    nobody else is sending it. Call inside a transaction."""
    row = await (
        await conn.execute(
            f"SELECT {_COLUMNS} FROM commands c"
            " WHERE c.command_id = %s AND c.status = 'pending' AND c.expires_at > now()"
            " AND NOT EXISTS (SELECT 1 FROM commands o WHERE o.device_id = c.device_id"
            "  AND o.status = 'pending' AND o.id < c.id AND o.expires_at > now())"
            " FOR UPDATE OF c SKIP LOCKED",
            (command_id,),
        )
    ).fetchone()
    return _command(row) if row else None


# Due: pending, or sent but the device has (re)connected since (it announces itself with
# an `online` status on every connection). A device on a clean session lost what was sent
# while it was going away; sending again is safe because devices answer by command_id.
_DUE = (
    "(c.status = 'pending' OR (c.status = 'sent' AND EXISTS (SELECT 1"
    " FROM device_status_events e WHERE e.device_id = c.device_id AND e.status = 'online'"
    " AND e.time > c.sent_at)))"
)


async def dispatch_needed(conn: Conn, *, online_since: datetime, deliver: bool) -> bool:
    """Is any command overdue, or (with `deliver`) pending for an online device?

    The dispatcher asks this every second: two index probes when nothing is open.
    """
    row = await (
        await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM commands"
            "  WHERE status IN ('pending', 'sent') AND expires_at <= now())"
            " OR (%(deliver)s AND EXISTS (SELECT 1 FROM commands c"
            f"  WHERE {_DUE} AND c.expires_at > now()"
            f"  AND c.device_id IN ({_ONLINE_DEVICES}))) AS needed",
            {"deliver": deliver, "online_since": online_since},
        )
    ).fetchone()
    return bool(row and row["needed"])


async def expire_overdue(conn: Conn) -> int:
    """Pending or sent commands past `expires_at` become expired; answer how many."""
    cursor = await conn.execute(
        "UPDATE commands SET status = 'expired', completed_at = expires_at"
        " WHERE status IN ('pending', 'sent') AND expires_at <= now()"
    )
    return cursor.rowcount


async def claim_due(conn: Conn, *, online_since: datetime, limit: int) -> list[Command]:
    """Lock the oldest due, unexpired commands of online devices, in creation order.

    Waits (does not skip) for a command the API is sending at this moment, so a
    newer command of the same device never overtakes it. Call inside a transaction.
    """
    rows = await (
        await conn.execute(
            f"SELECT {_COLUMNS} FROM commands c"
            f" WHERE {_DUE} AND c.expires_at > now()"
            f" AND c.device_id IN ({_ONLINE_DEVICES})"
            " ORDER BY c.id LIMIT %(limit)s FOR UPDATE OF c",
            {"online_since": online_since, "limit": limit},
        )
    ).fetchall()
    return [_command(row) for row in rows]


async def mark_sent(conn: Conn, command_ids: Sequence[UUID]) -> list[Command]:
    """Commands the broker acknowledged become (or stay) sent, with the time of this sending."""
    if not command_ids:
        return []
    rows = await (
        await conn.execute(
            "UPDATE commands AS c SET status = 'sent', sent_at = statement_timestamp()"
            f" WHERE c.command_id = ANY(%s) AND c.status IN ('pending', 'sent')"
            f" RETURNING {_COLUMNS}",
            (list(command_ids),),
        )
    ).fetchall()
    return [_command(row) for row in rows]


@dataclass(frozen=True, slots=True)
class ReportedResult:
    """A decoded result as ingest received it from `device_id` (kept whole if refused)."""

    device_id: str
    received_at: datetime
    topic: str
    payload: bytes
    result: CommandResult


async def apply_results(
    conn: AsyncConnection[Any], reported: Sequence[ReportedResult]
) -> list[Rejection | None]:
    """Close the commands these results answer; answer, per result, why it was refused.

    A result closes an open (pending or sent) command of the device that sent it.
    Anything else is refused: no such command of this device (`unknown_command`),
    or a command already closed (`command_closed`), unless it is the very result
    that closed it, redelivered (QoS 1 may deliver twice): that is harmless (None).
    Runs inside the writer's batch transaction.
    """
    if not reported:
        return []
    first: dict[tuple[str, UUID], int] = {}
    for index, item in enumerate(reported):
        first.setdefault((item.device_id, item.result.command_id), index)
    candidates = [reported[i] for i in first.values()]
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute(
        "UPDATE commands AS c"
        " SET status = v.status, result = v.result::json, completed_at = v.received_at"
        " FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::timestamptz[])"
        "  AS v(command_id, device_id, status, result, received_at)"
        " WHERE c.command_id = v.command_id AND c.device_id = v.device_id"
        " AND c.status IN ('pending', 'sent')"
        " RETURNING c.command_id",
        (
            [c.result.command_id for c in candidates],
            [c.device_id for c in candidates],
            [c.result.status.value for c in candidates],
            [encode_json(c.result.result) for c in candidates],
            [c.received_at for c in candidates],
        ),
    )
    closed = {row["command_id"] for row in await cursor.fetchall()}
    outcomes: list[Rejection | None] = [None] * len(reported)
    rest = [
        i
        for i, item in enumerate(reported)
        if first[(item.device_id, item.result.command_id)] != i
        or item.result.command_id not in closed
    ]
    if not rest:
        return outcomes
    await cursor.execute(
        "SELECT v.i, c.device_id, c.status,"
        " c.status = v.status AND c.result::jsonb = v.result::jsonb AS same"
        " FROM unnest(%s::int[], %s::uuid[], %s::text[], %s::text[]) AS v(i, command_id,"
        "  status, result)"
        " LEFT JOIN commands c ON c.command_id = v.command_id",
        (
            rest,
            [reported[i].result.command_id for i in rest],
            [reported[i].result.status.value for i in rest],
            [encode_json(reported[i].result.result) for i in rest],
        ),
    )
    for row in await cursor.fetchall():
        item = reported[row["i"]]
        command_id = item.result.command_id
        if row["device_id"] != item.device_id:
            outcomes[row["i"]] = Rejection(
                RejectReason.UNKNOWN_COMMAND,
                f"device {item.device_id!r} has no command {command_id}",
            )
        elif not row["same"]:
            outcomes[row["i"]] = Rejection(
                RejectReason.COMMAND_CLOSED,
                f"command {command_id} is already {row['status']}; this result was not kept on it",
            )
    return outcomes
