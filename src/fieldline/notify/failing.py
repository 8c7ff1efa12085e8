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

from psycopg import AsyncConnection

from fieldline.storage import alerts as alert_store
from fieldline.storage import notification_channels as channel_store
from fieldline.storage import notifications as outbox
from fieldline.storage.db import Row

log = logging.getLogger(__name__)

Conn = AsyncConnection[Row]


def alert_body(
    alert: outbox.ChannelAlert,
    *,
    channel_name: str,
    event: str,
    error: str | None,
    sent_at: datetime,
) -> dict[str, Any]:
    """The webhook body (SPEC §6) of a channel alert's event."""
    name = f'notification channel "{channel_name}" failing'
    if event == "resolved":
        summary = f'notification channel "{channel_name}" delivers again'
    else:
        summary = f"{name}: {error}" if error else name
    return {
        "alert_id": alert.id,
        "kind": "channel",
        "state": "resolved" if event == "resolved" else "firing",
        "event": event,
        "rule": {"id": None, "name": name},
        "severity": "critical",
        "device_id": None,
        "metric": None,
        "value": None,
        "started_at": alert.started_at.astimezone(UTC).isoformat(),
        "resolved_at": alert.resolved_at.astimezone(UTC).isoformat() if alert.resolved_at else None,
        "acknowledged_by": None,
        "note": None,
        "summary": summary,
        "sent_at": sent_at.astimezone(UTC).isoformat(),
    }


async def _tell_others(
    conn: Conn, alert: outbox.ChannelAlert, channel_id: int, body: dict[str, Any]
) -> None:
    others = await channel_store.enabled_channel_ids(conn, excluding=channel_id)
    await alert_store.insert_notifications(
        conn,
        alert_id=alert.id,
        channel_ids=others,
        event=body["event"],
        key=f"alert-{alert.id}-{alert.transitions}",
        body=body,
        silenced=None,  # channel alerts are never silenced
    )


async def channel_alert_acknowledged(conn: Conn, alert: alert_store.StoredAlert) -> None:
    """Inside the acknowledgement's transaction: tell the other channels who is on it."""
    if alert.channel_id is None:
        return
    channel = await channel_store.get_channel(conn, alert.channel_id)
    summary = alert_body(
        outbox.ChannelAlert(alert.id, alert.transitions, alert.started_at, alert.resolved_at),
        channel_name=channel.name,
        event="acknowledged",
        error=None,
        sent_at=datetime.now(UTC),
    )
    body = summary | {
        "state": "acknowledged",
        "acknowledged_by": alert.acknowledged_by,
        "note": alert.ack_note,
        "summary": f"{summary['summary']} (acknowledged by {alert.acknowledged_by})",
    }
    await _tell_others(
        conn,
        outbox.ChannelAlert(alert.id, alert.transitions, alert.started_at, alert.resolved_at),
        alert.channel_id,
        body,
    )


async def channel_failing(conn: Conn, channel_id: int, channel_name: str, error: str) -> bool:
    """Inside a transaction: open the channel's alert unless open; whether it opened now."""
    alert = await outbox.open_channel_alert(conn, channel_id, channel_name)
    if alert is None:
        return False
    body = alert_body(
        alert, channel_name=channel_name, event="firing", error=error, sent_at=datetime.now(UTC)
    )
    await _tell_others(conn, alert, channel_id, body)
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
    body = alert_body(
        alert, channel_name=channel_name, event="resolved", error=None, sent_at=datetime.now(UTC)
    )
    await _tell_others(conn, alert, channel_id, body)
    log.info(
        "notification channel alert resolved",
        extra={"channel_id": channel_id, "channel": channel_name, "alert_id": alert.id},
    )
    return True
