"""Creating, changing and deleting alert rules: what every door (API, CLI) shares.

A rule names notification channels that must exist. Changing what a rule watches
(scope or condition) bumps its revision; disabling, deleting or redefining it
resolves its open alerts, in the same transaction as the change and its audit entry,
so no alert outlives the rule that made it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from psycopg import AsyncConnection

from fieldline.alerts.lifecycle import resolve_rule_alerts
from fieldline.domain.alerts import RuleError, condition_json, scope_json
from fieldline.storage import alert_rules as rule_store
from fieldline.storage import audit as audit_store
from fieldline.storage.alert_rules import AlertRule, RuleSpec
from fieldline.storage.db import Row

Conn = AsyncConnection[Row]

TARGET = "alert_rule"


async def _check(conn: Conn, spec: RuleSpec) -> None:
    """What only the rule as a whole, or the database, can tell (RuleError otherwise)."""
    if spec.escalate_channels and spec.escalate_after_seconds <= 0:
        raise RuleError("escalate_channels: need escalate_after_seconds above 0")
    for field in ("channels", "escalate_channels"):
        missing = await rule_store.missing_channels(conn, list(getattr(spec, field)))
        if missing:
            raise RuleError(f"{field}: notification channel {missing[0]} does not exist")


def _described(spec: RuleSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "severity": spec.severity.value,
        "scope": scope_json(spec.scope),
        "condition": condition_json(spec.condition),
        "enabled": spec.enabled,
    }


async def create_rule(conn: Conn, *, actor: str, created_by: str, spec: RuleSpec) -> AlertRule:
    async with conn.transaction():
        await _check(conn, spec)
        rule = await rule_store.insert_rule(conn, spec, created_by=created_by)
        await audit_store.record(
            conn,
            actor=actor,
            action="alert_rule.create",
            target_type=TARGET,
            target_id=str(rule.id),
            detail=_described(spec),
        )
    return rule


async def update_rule(
    conn: Conn, *, actor: str, rule_id: int, changes: dict[str, Any]
) -> AlertRule:
    """Apply `changes` (RuleSpec's fields, as domain values)."""
    async with conn.transaction():
        before = await rule_store.get_rule(conn, rule_id, lock=True)
        spec = replace(before.spec, **changes)
        await _check(conn, spec)
        redefined = (spec.scope, spec.condition) != (before.spec.scope, before.spec.condition)
        rule = await rule_store.update_rule(conn, rule_id, spec, redefined=redefined)
        resolved = None
        if before.spec.enabled and not spec.enabled:
            resolved = "rule disabled"
        elif redefined:
            resolved = "rule changed"
        if resolved is not None:
            await resolve_rule_alerts(conn, rule_id, resolved)
        detail: dict[str, Any] = {"changes": sorted(changes), "revision": rule.revision}
        if redefined:
            detail |= {"scope": scope_json(spec.scope), "condition": condition_json(spec.condition)}
        if resolved is not None:
            detail["alerts_resolved"] = resolved
        await audit_store.record(
            conn,
            actor=actor,
            action="alert_rule.update",
            target_type=TARGET,
            target_id=str(rule_id),
            detail=detail,
        )
    return rule


async def delete_rule(conn: Conn, *, actor: str, rule_id: int) -> None:
    """Delete the rule; its alerts resolve and keep its name (their rule_id becomes null)."""
    async with conn.transaction():
        rule = await rule_store.get_rule(conn, rule_id, lock=True)
        await resolve_rule_alerts(conn, rule_id, "rule deleted")
        await rule_store.delete_rule(conn, rule_id)
        await audit_store.record(
            conn,
            actor=actor,
            action="alert_rule.delete",
            target_type=TARGET,
            target_id=str(rule_id),
            detail=_described(rule.spec),
        )
