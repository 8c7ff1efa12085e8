"""Alerts: opening, resolving, acknowledging, the timers' due events, and reading them.

Every event on an alert increments `transitions` in the statement that makes it, so
the event's idempotency key (`alert-{id}-{transitions}`) is decided by the row lock
that orders events on the alert, whichever process makes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from fieldline.storage.db import Row
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]

_NAMES = [
    "id",
    "kind",
    "rule_id",
    "rule_name",
    "channel_id",
    "severity",
    "device_id",
    "metric",
    "state",
    "started_at",
    "started_value",
    "acknowledged_at",
    "acknowledged_by",
    "ack_note",
    "resolved_at",
    "resolved_value",
    "resolved_reason",
    "escalated_at",
    "last_notified_at",
    "transitions",
]
_RETURNING = f" RETURNING {', '.join(_NAMES)}"
_A_COLUMNS = ", ".join(f"a.{name}" for name in _NAMES)  # where `alerts a` is joined

# Whether alert `a` is muted now (%(now)s): a silence of its device, its device's group,
# or its rule. Channel alerts are never silenced.
_SILENCE = (
    "SELECT s.reason FROM silences s WHERE a.kind = 'rule'"
    " AND s.starts_at <= %(now)s AND %(now)s < s.ends_at AND (s.device_id = a.device_id"
    " OR s.rule_id = a.rule_id OR s.group_name = (SELECT g.name FROM devices d"
    "  JOIN groups g ON g.id = d.group_id WHERE d.device_id = a.device_id))"
    " ORDER BY s.id LIMIT 1"
)


@dataclass(frozen=True, slots=True)
class StoredAlert:
    id: int
    kind: str
    rule_id: int | None
    rule_name: str
    channel_id: int | None
    severity: str
    device_id: str | None
    metric: str | None
    state: str
    started_at: datetime
    started_value: float | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_note: str | None
    resolved_at: datetime | None
    resolved_value: float | None
    resolved_reason: str | None
    escalated_at: datetime | None
    last_notified_at: datetime | None
    transitions: int
    silenced: bool = False


def _alert(row: Row | None) -> StoredAlert | None:
    return None if row is None else StoredAlert(**row)


@dataclass(frozen=True, slots=True)
class Opening:
    rule_id: int
    rule_name: str
    severity: str
    device_id: str
    metric: str | None
    started_at: datetime
    started_value: float | None


async def open_alerts(conn: Conn, openings: Sequence[Opening], now: datetime) -> list[StoredAlert]:
    """Each (rule, device)'s alert, opened with its first event, in one statement; a
    (rule, device) with an alert open already is skipped. Answered by id (the order given)."""
    if not openings:
        return []
    cursor = await conn.execute(
        "INSERT INTO alerts (rule_id, rule_name, severity, device_id, metric, started_at,"
        " started_value, last_notified_at, transitions) SELECT r, n, s, d, m, t, v, %s, 1"
        " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[],"
        " %s::timestamptz[], %s::float8[]) WITH ORDINALITY AS o(r, n, s, d, m, t, v, i)"
        " ORDER BY i ON CONFLICT (rule_id, coalesce(device_id, '')) WHERE state <> 'resolved'"
        f" AND kind = 'rule' DO NOTHING{_RETURNING}".encode(),
        (
            now,
            [o.rule_id for o in openings],
            [o.rule_name for o in openings],
            [o.severity for o in openings],
            [o.device_id for o in openings],
            [o.metric for o in openings],
            [o.started_at for o in openings],
            [o.started_value for o in openings],
        ),
    )
    return sorted((StoredAlert(**row) for row in await cursor.fetchall()), key=lambda a: a.id)


@dataclass(frozen=True, slots=True)
class Clearing:
    """A (rule, device)'s condition cleared: the reading's time and value."""

    rule_id: int
    device_id: str
    at: datetime
    value: float | None


async def resolve_open(
    conn: Conn, clearings: Sequence[Clearing], *, reason: str, now: datetime
) -> list[StoredAlert]:
    """Resolve the open alert of each (rule, device) that has one, in one statement;
    answered by id. A (rule, device) appears at most once."""
    if not clearings:
        return []
    cursor = await conn.execute(
        "UPDATE alerts a SET state = 'resolved', resolved_at = u.at, resolved_value = u.value,"
        " resolved_reason = %s, transitions = a.transitions + 1, last_notified_at = %s"
        " FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::float8[])"
        " AS u(rule_id, device_id, at, value)"
        " WHERE a.rule_id = u.rule_id AND a.device_id = u.device_id"
        f" AND a.state <> 'resolved' AND a.kind = 'rule' RETURNING {_A_COLUMNS}".encode(),
        (
            reason,
            now,
            [c.rule_id for c in clearings],
            [c.device_id for c in clearings],
            [c.at for c in clearings],
            [c.value for c in clearings],
        ),
    )
    return sorted((StoredAlert(**row) for row in await cursor.fetchall()), key=lambda a: a.id)


async def resolve_by_ids(
    conn: Conn, values: dict[int, float | None], *, reason: str, now: datetime
) -> list[StoredAlert]:
    """Resolve the given open alerts now, each with its closing value; answered by id."""
    if not values:
        return []
    ids = sorted(values)
    cursor = await conn.execute(
        "UPDATE alerts a SET state = 'resolved', resolved_at = %s, resolved_value = u.value,"
        " resolved_reason = %s, transitions = a.transitions + 1, last_notified_at = %s"
        " FROM unnest(%s::bigint[], %s::float8[]) AS u(id, value)"
        f" WHERE a.id = u.id AND a.state <> 'resolved' RETURNING {_A_COLUMNS}".encode(),
        (now, reason, now, ids, [values[i] for i in ids]),
    )
    return sorted((StoredAlert(**row) for row in await cursor.fetchall()), key=lambda a: a.id)


async def resolve_rule(conn: Conn, rule_id: int, reason: str) -> list[StoredAlert]:
    """Resolve every open alert of a rule (changed, disabled, deleted) at once."""
    cursor = await conn.execute(
        "UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_reason = %s,"
        " transitions = transitions + 1, last_notified_at = now()"
        f" WHERE rule_id = %s AND state <> 'resolved' AND kind = 'rule'{_RETURNING}".encode(),
        (reason, rule_id),
    )
    return [StoredAlert(**row) for row in await cursor.fetchall()]


async def resolve_orphans(conn: Conn, in_scope: str) -> list[StoredAlert]:
    """Open rule alerts that nothing will resolve any more, resolved here: their rule is
    gone or disabled (a safety net when the rule's change did not resolve them), their
    device was deleted, or it left the rule's scope (moved to another group, retyped).

    `in_scope` is the SQL condition of device `d` (joined with group `g`) being in rule
    `r`'s scope. The states of such devices go too, so a device that comes back into
    scope starts afresh.
    """
    await conn.execute(
        "DELETE FROM alert_state s USING alert_rules r WHERE r.id = s.rule_id AND NOT EXISTS"
        " (SELECT 1 FROM devices d LEFT JOIN groups g ON g.id = d.group_id"
        f"  WHERE d.device_id = s.device_id AND {in_scope})".encode()
    )
    cursor = await conn.execute(
        "UPDATE alerts a SET state = 'resolved', resolved_at = now(),"
        " resolved_reason = CASE WHEN a.rule_id IS NULL THEN 'rule deleted'"
        "  WHEN NOT r.enabled THEN 'rule disabled'"
        "  WHEN NOT EXISTS (SELECT 1 FROM devices d WHERE d.device_id = a.device_id)"
        "   THEN 'device deleted'"
        "  ELSE 'device left the rule''s scope' END,"
        " transitions = a.transitions + 1, last_notified_at = now()"
        " FROM alerts o LEFT JOIN alert_rules r ON r.id = o.rule_id"
        " WHERE o.id = a.id AND a.state <> 'resolved' AND a.kind = 'rule' AND ("
        "  a.rule_id IS NULL OR NOT r.enabled OR NOT EXISTS"
        "  (SELECT 1 FROM devices d LEFT JOIN groups g ON g.id = d.group_id"
        f"   WHERE d.device_id = a.device_id AND {in_scope}))"
        f" RETURNING {_A_COLUMNS}".encode()
    )
    return [StoredAlert(**row) for row in await cursor.fetchall()]


async def acknowledge(conn: Conn, alert_id: int, by: str, note: str | None) -> StoredAlert | None:
    """Acknowledge a firing alert; None when it is not firing (or does not exist)."""
    cursor = await conn.execute(
        "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(),"
        " acknowledged_by = %s, ack_note = %s, transitions = transitions + 1,"
        f" last_notified_at = now() WHERE id = %s AND state = 'firing'{_RETURNING}".encode(),
        (by, note, alert_id),
    )
    return _alert(await cursor.fetchone())


async def repeats_due(conn: Conn, now: datetime) -> list[StoredAlert]:
    """Firing, unacknowledged alerts whose rule repeats and whose last event is that old;
    each takes its `repeat` event here."""
    return await _take_events(
        conn,
        "r.repeat_seconds > 0 AND a.last_notified_at"
        " + make_interval(secs => r.repeat_seconds) <= %(now)s",
        "",
        now,
    )


async def escalations_due(conn: Conn, now: datetime) -> list[StoredAlert]:
    """Firing alerts unacknowledged for the rule's `escalate_after_seconds` since opened."""
    return await _take_events(
        conn,
        "r.escalate_after_seconds > 0 AND a.escalated_at IS NULL AND a.created_at"
        " + make_interval(secs => r.escalate_after_seconds) <= %(now)s",
        ", escalated_at = %(now)s",
        now,
    )


async def _take_events(conn: Conn, due: str, also: str, now: datetime) -> list[StoredAlert]:
    cursor = await conn.execute(
        "UPDATE alerts a SET transitions = a.transitions + 1, last_notified_at = %(now)s"
        f"{also} FROM alert_rules r WHERE r.id = a.rule_id AND a.state = 'firing'"
        f" AND a.kind = 'rule' AND {due} RETURNING {_A_COLUMNS}".encode(),
        {"now": now},
    )
    return sorted((StoredAlert(**row) for row in await cursor.fetchall()), key=lambda a: a.id)


async def silence_reasons(conn: Conn, alert_ids: Sequence[int], now: datetime) -> dict[int, str]:
    """The reason of a silence muting each alert now, for those a silence mutes."""
    if not alert_ids:
        return {}
    cursor = await conn.execute(
        f"SELECT a.id, ({_SILENCE}) AS reason FROM alerts a WHERE a.id = ANY(%(ids)s)".encode(),
        {"now": now, "ids": list(alert_ids)},
    )
    return {row["id"]: row["reason"] for row in await cursor.fetchall() if row["reason"]}


async def enabled_channels(conn: Conn, channel_ids: list[int]) -> list[int]:
    if not channel_ids:
        return []
    cursor = await conn.execute(
        "SELECT id FROM notification_channels WHERE id = ANY(%s) AND enabled ORDER BY id",
        (channel_ids,),
    )
    return [row["id"] for row in await cursor.fetchall()]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One outbox row: an alert's event for one channel; `silenced` holds it back."""

    alert_id: int
    channel_id: int
    event: str
    key: str
    body: str  # JSON
    silenced: str | None = None


async def insert_notifications(conn: Conn, rows: Sequence[Outgoing]) -> int:
    """The outbox rows in one statement, their ids in the order given; `suppressed` when
    silenced; a repeated (key, channel) is a no-op. Answers how many were inserted."""
    if not rows:
        return 0
    cursor = await conn.execute(
        "INSERT INTO notifications (alert_id, channel_id, event, idempotency_key, body,"
        " status, last_error) SELECT a, c, e, k, b::json, s, l FROM unnest(%s::bigint[],"
        " %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
        " WITH ORDINALITY AS o(a, c, e, k, b, s, l, i) ORDER BY i"
        " ON CONFLICT (idempotency_key, channel_id) DO NOTHING",
        (
            [r.alert_id for r in rows],
            [r.channel_id for r in rows],
            [r.event for r in rows],
            [r.key for r in rows],
            [r.body for r in rows],
            ["pending" if r.silenced is None else "suppressed" for r in rows],
            [None if r.silenced is None else f"silenced: {r.silenced}" for r in rows],
        ),
    )
    return cursor.rowcount


async def devices_metadata(conn: Conn, device_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not device_ids:
        return {}
    cursor = await conn.execute(
        "SELECT device_id, metadata FROM devices WHERE device_id = ANY(%s)", (list(device_ids),)
    )
    return {
        row["device_id"]: row["metadata"]
        for row in await cursor.fetchall()
        if isinstance(row["metadata"], dict)
    }


async def active_counts(conn: Conn) -> dict[tuple[str, str], int]:
    """Open alerts by (severity, state)."""
    cursor = await conn.execute(
        "SELECT severity, state, count(*) AS n FROM alerts WHERE state <> 'resolved'"
        " GROUP BY severity, state"
    )
    return {(row["severity"], row["state"]): row["n"] for row in await cursor.fetchall()}


# ---------------------------------------------------------------------------------------
# The API's reads

_SELECT = f"SELECT {_A_COLUMNS}, ({_SILENCE}) IS NOT NULL AS silenced FROM alerts a"


async def get_alert(conn: Conn, alert_id: int, now: datetime) -> StoredAlert | None:
    cursor = await conn.execute(
        f"{_SELECT} WHERE a.id = %(id)s".encode(), {"id": alert_id, "now": now}
    )
    return _alert(await cursor.fetchone())


async def list_alerts(
    conn: Conn,
    *,
    state: str | None,
    severity: str | None,
    device_id: str | None,
    rule_id: int | None,
    now: datetime,
    limit: int,
    cursor: str | None,
) -> Page[StoredAlert]:
    """Newest first. `state` "active" means firing or acknowledged."""
    before = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            f"{_SELECT} WHERE (%(state)s::text IS NULL"
            " OR a.state = %(state)s::text"
            " OR (%(state)s::text = 'active' AND a.state <> 'resolved'))"
            " AND (%(severity)s::text IS NULL OR a.severity = %(severity)s::text)"
            " AND (%(device)s::text IS NULL OR a.device_id = %(device)s::text)"
            " AND (%(rule)s::bigint IS NULL OR a.rule_id = %(rule)s::bigint)"
            " AND (%(before)s::bigint IS NULL OR a.id < %(before)s::bigint)"
            " ORDER BY a.id DESC LIMIT %(limit)s".encode(),
            {
                "state": state,
                "severity": severity,
                "device": device_id,
                "rule": rule_id,
                "before": before[0] if before else None,
                "limit": limit + 1,
                "now": now,
            },
        )
    ).fetchall()
    items = [StoredAlert(**row) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)
