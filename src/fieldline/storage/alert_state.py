"""What the evaluator reads and keeps: enabled rules, the inbox, per-(rule, device) state.

Rules are read `FOR SHARE` inside the evaluator's transaction: a rule change (which
resolves the rule's alerts and drops its state in its own transaction) waits for a
round in progress, and a round waits for the change, so no round writes state or
opens an alert for a revision that was replaced meanwhile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from fieldline.domain.alerts import (
    Condition,
    Phase,
    RuleError,
    Scope,
    ScopeKind,
    SeriesState,
    Severity,
    parse_condition,
)
from fieldline.storage.db import Row

log = logging.getLogger(__name__)

Conn = AsyncConnection[Row]

# Whether device `d` (joined with its group `g`) is in the scope of rule `r`.
IN_SCOPE = (
    "(r.scope_kind = 'fleet'"
    " OR (r.scope_kind = 'device' AND d.device_id = r.scope_value)"
    " OR (r.scope_kind = 'group' AND g.name = r.scope_value)"
    " OR (r.scope_kind = 'device_type' AND d.device_type = r.scope_value))"
)

_RULE_COLUMNS = (
    "id, name, severity, scope_kind, scope_value, condition, channels, repeat_seconds,"
    " escalate_after_seconds, escalate_channels, revision, created_at"
)


@dataclass(frozen=True, slots=True)
class ActiveRule:
    id: int
    name: str
    severity: Severity
    scope: Scope
    condition: Condition
    channels: tuple[int, ...]
    repeat_seconds: int
    escalate_after_seconds: int
    escalate_channels: tuple[int, ...]
    revision: int
    created_at: datetime


def _rule(row: Row) -> ActiveRule | None:
    try:
        condition = parse_condition(row["condition"])
    except RuleError as exc:  # written by hand around the API: skipped, not fatal
        log.warning("alert rule unreadable", extra={"rule_id": row["id"], "error": str(exc)})
        return None
    return ActiveRule(
        id=row["id"],
        name=row["name"],
        severity=Severity(row["severity"]),
        scope=Scope(ScopeKind(row["scope_kind"]), row["scope_value"]),
        condition=condition,
        channels=tuple(row["channels"]),
        repeat_seconds=row["repeat_seconds"],
        escalate_after_seconds=row["escalate_after_seconds"],
        escalate_channels=tuple(row["escalate_channels"]),
        revision=row["revision"],
        created_at=row["created_at"],
    )


# Parsed rules by id, with the row version (`xmin`) they were parsed from.
RuleCache = dict[int, tuple[str, ActiveRule | None]]


async def enabled_rules(conn: Conn, cache: RuleCache | None = None) -> list[ActiveRule]:
    """Inside the round's transaction: every enabled rule, share-locked until it ends.

    With a `cache` (kept by the caller across rounds), only rules whose row changed
    since are read and parsed again: reading and parsing 1,000 rules each round was a
    sixth of the evaluator's time (`fieldline bench alerts`)."""
    cache = {} if cache is None else cache
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT id, xmin::text FROM alert_rules WHERE enabled ORDER BY id FOR SHARE"
    )
    versions: list[tuple[int, str]] = await cursor.fetchall()
    stale = [rule_id for rule_id, version in versions if cache.get(rule_id, ("",))[0] != version]
    if stale:
        fresh = await conn.execute(
            f"SELECT xmin::text AS version, {_RULE_COLUMNS} FROM alert_rules"
            " WHERE id = ANY(%b::bigint[])".encode(),
            (stale,),
        )
        for row in await fresh.fetchall():
            cache[row["id"]] = (row.pop("version"), _rule(row))
    enabled = {rule_id for rule_id, _ in versions}
    for gone in set(cache) - enabled:
        del cache[gone]
    return [rule for rule_id, _ in versions if (rule := cache[rule_id][1]) is not None]


async def rule_by_id(conn: Conn, rule_id: int) -> ActiveRule | None:
    """A rule whatever its `enabled` (to notify about its alerts); None when deleted."""
    cursor = await conn.execute(
        f"SELECT {_RULE_COLUMNS} FROM alert_rules WHERE id = %s".encode(), (rule_id,)
    )
    row = await cursor.fetchone()
    return None if row is None else _rule(row)


@dataclass(frozen=True, slots=True)
class InboxReading:
    device_id: str
    metric: str
    time: datetime
    value: float


async def take_inbox(conn: Conn, limit: int) -> list[InboxReading]:
    """Delete and answer the `limit` oldest committed readings of the inbox (by reading
    time, so a series split over two chunks is still applied in time order)."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "DELETE FROM alert_inbox WHERE ctid = ANY(ARRAY("
        " SELECT ctid FROM alert_inbox ORDER BY time LIMIT %s))"
        " RETURNING device_id, metric, time, value",
        (limit,),
    )
    return [InboxReading(*row) for row in await cursor.fetchall()]


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What scopes and per-device thresholds are decided by."""

    device_id: str
    group: str | None
    device_type: str
    metadata: dict[str, Any]


async def device_facts(
    conn: Conn, device_ids: list[str], *, metadata: bool = True
) -> dict[str, DeviceFacts]:
    """Scope facts of the devices; their metadata only when asked (a rule's threshold
    comes from it): decoding 10,000 devices' JSON each round was a tenth of the
    evaluator's time when no rule used it."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        'SELECT d.device_id, g.name AS "group", d.device_type,'
        f" {'d.metadata' if metadata else 'NULL'}"
        " FROM devices d LEFT JOIN groups g ON g.id = d.group_id"
        " WHERE d.device_id = ANY(%b::text[])".encode(),
        (device_ids,),
    )
    return {
        row[0]: DeviceFacts(row[0], row[1], row[2], row[3] if isinstance(row[3], dict) else {})
        for row in await cursor.fetchall()
    }


def _facts(row: Row) -> DeviceFacts:
    metadata = row["metadata"]
    return DeviceFacts(
        row["device_id"],
        row["group"],
        row["device_type"],
        metadata if isinstance(metadata, dict) else {},
    )


StateKey = tuple[int, str]  # rule id, device id


@dataclass(frozen=True, slots=True)
class StoredState:
    revision: int
    state: SeriesState


async def load_states(
    conn: Conn, rule_ids: list[int], device_ids: list[str]
) -> dict[StateKey, StoredState]:
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT rule_id, device_id, revision, phase, since, last_time, last_value"
        " FROM alert_state WHERE rule_id = ANY(%b::bigint[]) AND device_id = ANY(%b::text[])",
        (rule_ids, device_ids),
    )
    phases = _PHASES
    return {
        (rule_id, device_id): StoredState(
            revision, SeriesState(phases[phase], since, last_time, last_value)
        )
        for rule_id, device_id, revision, phase, since, last_time, last_value in (
            await cursor.fetchall()
        )
    }


_PHASES = {str(phase): phase for phase in Phase}


def _stored(row: Row) -> StoredState:
    state = SeriesState(Phase(row["phase"]), row["since"], row["last_time"], row["last_value"])
    return StoredState(row["revision"], state)


async def timed_states(conn: Conn) -> dict[StateKey, StoredState]:
    """States whose timer runs (pending, clearing) under their rule's current revision."""
    cursor = await conn.execute(
        "SELECT s.rule_id, s.device_id, s.revision, s.phase, s.since, s.last_time, s.last_value"
        " FROM alert_state s JOIN alert_rules r ON r.id = s.rule_id AND r.revision = s.revision"
        " WHERE s.phase IN ('pending', 'clearing') AND r.enabled"
    )
    return {(row["rule_id"], row["device_id"]): _stored(row) for row in await cursor.fetchall()}


async def save_states(conn: Conn, states: dict[StateKey, StoredState]) -> None:
    """Upsert the states that changed this round (the caller passes only those)."""
    if not states:
        return
    keys = sorted(states)
    await conn.execute(
        "INSERT INTO alert_state (rule_id, device_id, revision, phase, since, last_time,"
        " last_value) SELECT * FROM unnest(%b::bigint[], %b::text[], %b::int[], %b::text[],"
        " %b::timestamptz[], %b::timestamptz[], %b::float8[])"
        " ON CONFLICT (rule_id, device_id) DO UPDATE SET revision = EXCLUDED.revision,"
        " phase = EXCLUDED.phase, since = EXCLUDED.since, last_time = EXCLUDED.last_time,"
        " last_value = EXCLUDED.last_value",
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [states[k].revision for k in keys],
            [str(states[k].state.phase) for k in keys],
            [states[k].state.since for k in keys],
            [states[k].state.last_time for k in keys],
            [states[k].state.last_value for k in keys],
        ),
    )


@dataclass(frozen=True, slots=True)
class Seed:
    rule_id: int
    device: DeviceFacts
    time: datetime
    value: float


async def unseeded(conn: Conn, rules: list[ActiveRule]) -> list[Seed]:
    """The latest value of each (threshold rule, device in scope) that has no state of the
    rule's revision: what a new rule is first judged on, without waiting for a reading."""
    if not rules:
        return []
    cursor = await conn.execute(
        'SELECT r.id AS rule_id, d.device_id, g.name AS "group", d.device_type, d.metadata,'
        " l.time, l.value"
        " FROM alert_rules r JOIN telemetry_latest l ON l.metric = r.metric"
        " JOIN devices d ON d.device_id = l.device_id LEFT JOIN groups g ON g.id = d.group_id"
        f" WHERE r.id = ANY(%s) AND {IN_SCOPE} AND NOT EXISTS (SELECT 1 FROM alert_state s"
        "  WHERE s.rule_id = r.id AND s.device_id = d.device_id AND s.revision = r.revision)"
        " ORDER BY r.id, d.device_id".encode(),
        ([rule.id for rule in rules],),
    )
    return [
        Seed(row["rule_id"], _facts(row), row["time"], row["value"])
        for row in await cursor.fetchall()
    ]


@dataclass(frozen=True, slots=True)
class Due:
    """A timer-only rule (offline, no_data) whose condition held long enough on a device."""

    rule_id: int
    device_id: str
    at: datetime  # when it became due: the moment the alert starts


async def offline_due(conn: Conn, now: datetime, online_timeout: float) -> list[Due]:
    """Devices offline (said so, or silent past the online timeout) for the rule's
    `for_seconds` since last heard from, with no open alert of the rule."""
    return await _due(
        conn,
        "SELECT r.id AS rule_id, d.device_id,"
        " d.last_seen + make_interval(secs => (r.condition->>'for_seconds')::int) AS at"
        " FROM alert_rules r JOIN devices d ON d.enabled AND d.last_seen IS NOT NULL"
        " LEFT JOIN groups g ON g.id = d.group_id"
        f" WHERE r.enabled AND r.kind = 'offline' AND {IN_SCOPE}"
        " AND (d.status = 'offline' OR d.last_seen < %(now)s - make_interval(secs => %(timeout)s))"
        " AND d.last_seen + make_interval(secs => (r.condition->>'for_seconds')::int) <= %(now)s",
        now,
        online_timeout,
    )


async def no_data_due(conn: Conn, now: datetime) -> list[Due]:
    """(rule, device) whose metric was last received `for_seconds` ago or more; never
    received counts from the later of the rule's and the device's creation."""
    return await _due(
        conn,
        "SELECT r.id AS rule_id, d.device_id,"
        " coalesce(l.time, greatest(r.created_at, d.created_at))"
        "  + make_interval(secs => (r.condition->>'for_seconds')::int) AS at"
        " FROM alert_rules r JOIN devices d ON d.enabled"
        " LEFT JOIN groups g ON g.id = d.group_id"
        " LEFT JOIN telemetry_latest l ON l.device_id = d.device_id AND l.metric = r.metric"
        f" WHERE r.enabled AND r.kind = 'no_data' AND {IN_SCOPE}"
        " AND coalesce(l.time, greatest(r.created_at, d.created_at))"
        "  + make_interval(secs => (r.condition->>'for_seconds')::int) <= %(now)s",
        now,
        0.0,
    )


async def _due(conn: Conn, select: str, now: datetime, online_timeout: float) -> list[Due]:
    cursor = await conn.execute(
        f"{select} AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.rule_id = r.id"
        " AND a.device_id = d.device_id AND a.state <> 'resolved' AND a.kind = 'rule')"
        " ORDER BY r.id, d.device_id".encode(),
        {"now": now, "timeout": online_timeout},
    )
    return [Due(**row) for row in await cursor.fetchall()]


@dataclass(frozen=True, slots=True)
class Back:
    """An open alert of a timer-only rule whose condition no longer holds."""

    alert_id: int
    rule_id: int
    value: float | None  # no_data: the value that came back


async def timer_alerts_back(conn: Conn, now: datetime, online_timeout: float) -> list[Back]:
    cursor = await conn.execute(
        "SELECT a.id AS alert_id, a.rule_id, l.value FROM alerts a"
        " JOIN alert_rules r ON r.id = a.rule_id AND r.enabled AND r.kind IN ('offline', 'no_data')"
        " JOIN devices d ON d.device_id = a.device_id"
        " LEFT JOIN telemetry_latest l ON r.kind = 'no_data'"
        "  AND l.device_id = a.device_id AND l.metric = r.metric"
        " WHERE a.state <> 'resolved' AND a.kind = 'rule' AND CASE r.kind"
        "  WHEN 'offline' THEN d.status = 'online'"
        "   AND d.last_seen >= %(now)s - make_interval(secs => %(timeout)s)"
        "  ELSE l.time + make_interval(secs => (r.condition->>'for_seconds')::int) > %(now)s"
        " END ORDER BY a.id",
        {"now": now, "timeout": online_timeout},
    )
    return [Back(**row) for row in await cursor.fetchall()]


async def delete_rule_states(conn: Conn, rule_id: int) -> None:
    await conn.execute("DELETE FROM alert_state WHERE rule_id = %s", (rule_id,))
