"""A channel that keeps failing raises an alert of its own, told on every other channel.

Opened when the channel's head has failed `notify_failing_after_attempts` times in a
row; resolved when the channel delivers again (or is disabled or deleted). Its firing
and resolved events go to every other enabled channel; channel alerts are never
silenced. Both happen in the transaction that records the attempt, so the alert and
its notifications commit together.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg import AsyncConnection

from fieldline.alerts.body import Event, idempotency_key, webhook_body
from fieldline.storage import alerts as alert_store
from fieldline.storage import notification_channels as channel_store
from fieldline.storage import notifications as outbox
from fieldline.storage.db import Row

log = logging.getLogger(__name__)

Conn = AsyncConnection[Row]


async def alert_body(
    conn: Conn, alert_id: int, event: Event, summary: str
) -> tuple[alert_store.StoredAlert, dict[str, Any]]:
    """The alert's webhook body (alerts.body, the one SPEC §6 shape), with its own
    summary line: for the alerts no rule makes (a channel's, fieldline's own)."""
    now = datetime.now(UTC)
    alert = await alert_store.get_alert(conn, alert_id, now)
    assert alert is not None  # opened, resolved or acknowledged in this transaction
    body = webhook_body(alert, event, condition=None, lines=None, sent_at=now)
    return alert, body | {"summary": summary}


async def tell_channels(
    conn: Conn, alert: alert_store.StoredAlert, body: dict[str, Any], *, excluding: int | None
) -> None:
    """Queue `body` for every enabled channel but `excluding` (never silenced)."""
    others = await channel_store.enabled_channel_ids(conn, excluding=excluding)
    key, json = idempotency_key(alert), orjson.dumps(body).decode()
    await alert_store.insert_notifications(
        conn, [alert_store.Outgoing(alert.id, other, body["event"], key, json) for other in others]
    )


async def told_everyone_acknowledged(conn: Conn, alert: alert_store.StoredAlert) -> None:
    """Inside the acknowledgement's transaction of a channel's or a system alert: tell
    the channels it was told on who is on it."""
    summary = f"{alert.rule_name} (acknowledged by {alert.acknowledged_by})"
    current, body = await alert_body(conn, alert.id, Event.ACKNOWLEDGED, summary)
    await tell_channels(conn, current, body, excluding=alert.channel_id)


async def channel_failing(conn: Conn, channel_id: int, channel_name: str, error: str) -> bool:
    """Inside a transaction: open the channel's alert unless open; whether it opened now."""
    alert = await outbox.open_channel_alert(conn, channel_id, channel_name)
    if alert is None:
        return False
    name = f'notification channel "{channel_name}" failing'
    current, body = await alert_body(
        conn, alert.id, Event.FIRING, f"{name}: {error}" if error else name
    )
    await tell_channels(conn, current, body, excluding=channel_id)
    log.warning(
        "notification channel failing",
        extra={"channel_id": channel_id, "channel": channel_name, "alert_id": alert.id},
    )
    return True


async def channel_back(conn: Conn, channel_id: int, channel_name: str, reason: str) -> bool:
    """Inside a transaction: resolve the channel's alert if open; whether it was."""
    alert = await outbox.resolve_channel_alert(conn, channel_id, reason)
    if alert is None:
        return False
    summary = f'notification channel "{channel_name}" delivers again'
    current, body = await alert_body(conn, alert.id, Event.RESOLVED, summary)
    await tell_channels(conn, current, body, excluding=channel_id)
    log.info(
        "notification channel alert resolved",
        extra={"channel_id": channel_id, "channel": channel_name, "alert_id": alert.id},
    )
    return True
