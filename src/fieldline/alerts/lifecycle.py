"""A STUB of H1's `resolve_rule_alerts` (issue 14's contract), so the rules API can resolve a
changed, disabled or deleted rule's open alerts in its own transaction until the
engine's module replaces this one at merge time."""

from __future__ import annotations

from psycopg import AsyncConnection

from fieldline.storage.db import Row


async def resolve_rule_alerts(conn: AsyncConnection[Row], rule_id: int, reason: str) -> None:
    """Resolve the rule's open alerts with `reason` and forget its per-device state."""
    await conn.execute(
        "UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_reason = %s"
        " WHERE rule_id = %s AND state <> 'resolved'",
        (reason, rule_id),
    )
    await conn.execute("DELETE FROM alert_state WHERE rule_id = %s", (rule_id,))
