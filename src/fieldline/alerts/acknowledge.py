"""Acknowledging an alert: someone is on it, so repeats and escalation stop."""

from __future__ import annotations

from datetime import UTC, datetime

from fieldline.alerts.body import Event
from fieldline.alerts.enqueue import enqueue
from fieldline.notify.failing import told_everyone_acknowledged
from fieldline.storage import alert_state as state_store
from fieldline.storage import alerts as alert_store
from fieldline.storage import audit
from fieldline.storage.alerts import Conn, StoredAlert
from fieldline.storage.errors import NotFoundError


class NotAcknowledgeableError(Exception):
    """The alert is resolved, or acknowledged already."""


async def acknowledge(conn: Conn, alert_id: int, *, username: str, note: str | None) -> StoredAlert:
    """Acknowledge a firing alert, audit it and notify `acknowledged`, in one transaction."""
    now = datetime.now(UTC)
    async with conn.transaction():
        alert = await alert_store.acknowledge(conn, alert_id, username, note)
        if alert is None:
            current = await alert_store.get_alert(conn, alert_id, now)
            if current is None:
                raise NotFoundError(f"no alert {alert_id}")
            raise NotAcknowledgeableError(f"alert {alert_id} is {current.state}")
        await audit.record(
            conn,
            actor=audit.user_actor(username),
            action="alert.acknowledge",
            target_type="alert",
            target_id=str(alert_id),
            detail={"note": note} if note else None,
        )
        if alert.kind in ("channel", "system"):
            await told_everyone_acknowledged(conn, alert)
        else:
            rule = (
                None if alert.rule_id is None else await state_store.rule_by_id(conn, alert.rule_id)
            )
            await enqueue(conn, alert, Event.ACKNOWLEDGED, rule, now)
        found = await alert_store.get_alert(conn, alert_id, now)
    assert found is not None  # updated in this transaction
    return found
