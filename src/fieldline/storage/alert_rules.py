"""Alert rules (SPEC §6): what each watches, how it notifies, and its revision."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Json

from fieldline.domain.alerts import (
    Condition,
    NoData,
    Offline,
    Scope,
    ScopeKind,
    Severity,
    Threshold,
    condition_json,
    parse_condition,
)
from fieldline.storage.alert_state import IN_SCOPE
from fieldline.storage.db import Row
from fieldline.storage.errors import NotFoundError
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """What a user sets on a rule."""

    name: str
    severity: Severity
    scope: Scope
    condition: Condition
    channels: tuple[int, ...] = ()
    repeat_seconds: int = 0
    escalate_after_seconds: int = 0
    escalate_channels: tuple[int, ...] = ()
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class AlertRule:
    id: int
    spec: RuleSpec
    revision: int  # bumped when scope or condition change
    created_by: str
    created_at: datetime
    updated_at: datetime


def _rule(row: Row) -> AlertRule:
    spec = RuleSpec(
        name=row["name"],
        severity=Severity(row["severity"]),
        scope=Scope(ScopeKind(row["scope_kind"]), row["scope_value"]),
        condition=parse_condition(row["condition"]),
        channels=tuple(row["channels"]),
        repeat_seconds=row["repeat_seconds"],
        escalate_after_seconds=row["escalate_after_seconds"],
        escalate_channels=tuple(row["escalate_channels"]),
        enabled=row["enabled"],
    )
    return AlertRule(
        row["id"], spec, row["revision"], row["created_by"], row["created_at"], row["updated_at"]
    )


_KINDS = {Threshold: "threshold", Offline: "offline", NoData: "no_data"}


def _columns(spec: RuleSpec) -> dict[str, Any]:
    """The row's columns; `kind` and `metric` copy the condition's, for indexing."""
    condition = spec.condition
    kind = _KINDS[type(condition)]
    metric = None if isinstance(condition, Offline) else condition.metric
    return {
        "name": spec.name,
        "severity": spec.severity.value,
        "scope_kind": spec.scope.kind.value,
        "scope_value": spec.scope.value,
        "kind": kind,
        "metric": metric,
        "condition": Json(condition_json(spec.condition)),
        "channels": list(spec.channels),
        "repeat_seconds": spec.repeat_seconds,
        "escalate_after_seconds": spec.escalate_after_seconds,
        "escalate_channels": list(spec.escalate_channels),
        "enabled": spec.enabled,
    }


async def insert_rule(conn: Conn, spec: RuleSpec, *, created_by: str) -> AlertRule:
    columns = _columns(spec) | {"created_by": created_by}
    names = ", ".join(columns)
    values = ", ".join(f"%({name})s" for name in columns)
    row = await (
        await conn.execute(
            f"INSERT INTO alert_rules ({names}) VALUES ({values}) RETURNING *", columns
        )
    ).fetchone()
    assert row is not None
    return _rule(row)


async def get_rule(conn: Conn, rule_id: int, *, lock: bool = False) -> AlertRule:
    """The rule; with `lock`, held until the transaction ends (a change reads, then writes)."""
    row = await (
        await conn.execute(
            "SELECT * FROM alert_rules WHERE id = %s" + (" FOR UPDATE" if lock else ""),
            (rule_id,),
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"alert rule {rule_id} does not exist")
    return _rule(row)


async def list_rules(
    conn: Conn,
    *,
    enabled: bool | None,
    severity: Severity | None,
    limit: int,
    cursor: str | None,
) -> Page[AlertRule]:
    """In id order (creation order)."""
    after = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            "SELECT * FROM alert_rules"
            " WHERE (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s::boolean)"
            " AND (%(severity)s::text IS NULL OR severity = %(severity)s::text)"
            " AND (%(after)s::bigint IS NULL OR id > %(after)s::bigint)"
            " ORDER BY id LIMIT %(limit)s",
            {
                "enabled": enabled,
                "severity": severity.value if severity else None,
                "after": after[0] if after else None,
                "limit": limit + 1,
            },
        )
    ).fetchall()
    items = [_rule(row) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)


async def update_rule(conn: Conn, rule_id: int, spec: RuleSpec, *, redefined: bool) -> AlertRule:
    """Write `spec`; `redefined` (scope or condition changed) bumps the revision."""
    columns = _columns(spec)
    assignments = ", ".join(f"{name} = %({name})s" for name in columns)
    row = await (
        await conn.execute(
            f"UPDATE alert_rules SET {assignments}, updated_at = now(),"
            " revision = revision + %(bump)s::int WHERE id = %(id)s RETURNING *",
            columns | {"id": rule_id, "bump": 1 if redefined else 0},
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"alert rule {rule_id} does not exist")
    return _rule(row)


async def delete_rule(conn: Conn, rule_id: int) -> None:
    cursor = await conn.execute("DELETE FROM alert_rules WHERE id = %s", (rule_id,))
    if cursor.rowcount == 0:
        raise NotFoundError(f"alert rule {rule_id} does not exist")


async def missing_channels(conn: Conn, channel_ids: list[int]) -> list[int]:
    """Which of these notification channels do not exist. Those that do stay locked
    (FOR KEY SHARE) until the transaction ends, so none is deleted under a rule naming it."""
    if not channel_ids:
        return []
    rows = await (
        await conn.execute(
            "SELECT id FROM notification_channels WHERE id = ANY(%s) FOR KEY SHARE",
            (channel_ids,),
        )
    ).fetchall()
    found = {row["id"] for row in rows}
    return sorted(set(channel_ids) - found)


@dataclass(frozen=True, slots=True)
class WatchedDevice:
    """A device a rule's scope covers, with what evaluating the rule on it needs."""

    device_id: str
    metadata: dict[str, Any]  # per-device thresholds
    created_at: datetime  # a metric never received is missed from then (no_data)


async def devices_in_scope(
    conn: Conn, scope: Scope, *, device_id: str | None, limit: int
) -> list[WatchedDevice]:
    """The devices `scope` covers (only `device_id`, if given), in id order, at most `limit`."""
    rows = await (
        await conn.execute(
            # The draft's scope as the row `r` that alert_state.IN_SCOPE reads a rule from.
            "SELECT d.device_id, d.metadata, d.created_at"
            " FROM devices d LEFT JOIN groups g ON g.id = d.group_id,"
            " (SELECT %(kind)s::text AS scope_kind, %(value)s::text AS scope_value) r"
            f" WHERE {IN_SCOPE}"
            " AND (%(device)s::text IS NULL OR d.device_id = %(device)s::text)"
            " ORDER BY d.device_id LIMIT %(limit)s".encode(),
            {"kind": scope.kind.value, "value": scope.value, "device": device_id, "limit": limit},
        )
    ).fetchall()
    return [WatchedDevice(**row) for row in rows]
