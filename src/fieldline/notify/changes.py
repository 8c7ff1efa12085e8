"""Creating, changing, deleting and testing notification channels, each with its audit entry.

A config is validated by its type's model before it is stored. A PATCH's `config` is
laid over the stored one (a key given null is removed), so a client that was shown a
redacted config need not send the secrets again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg import AsyncConnection

from fieldline.domain.users import User
from fieldline.notify import failing
from fieldline.notify.base import Delivery, Notice, failed
from fieldline.notify.channels import build_channel
from fieldline.notify.config import ChannelType, parse_config, stored
from fieldline.notify.http import http_client
from fieldline.storage import audit as audit_store
from fieldline.storage import notification_channels as channel_store
from fieldline.storage.db import Row
from fieldline.storage.notification_channels import NotificationChannel

Conn = AsyncConnection[Row]


@dataclass(frozen=True, slots=True)
class TrialOutcome:
    delivery: Delivery
    duration_ms: float


async def _audit(
    conn: Conn, actor: User, action: str, channel: NotificationChannel, detail: dict[str, Any]
) -> None:
    await audit_store.record(
        conn,
        actor=audit_store.user_actor(actor.username),
        action=f"notification_channel.{action}",
        target_type="notification_channel",
        target_id=str(channel.id),
        detail={"name": channel.name, "type": channel.type, **detail},
    )


async def create_channel(
    conn: Conn,
    *,
    actor: User,
    name: str,
    kind: ChannelType,
    config: dict[str, Any],
    enabled: bool,
) -> NotificationChannel:
    """ChannelConfigError (nothing stored) or AlreadyExistsError."""
    checked = stored(parse_config(kind, config))
    async with conn.transaction():
        channel = await channel_store.create_channel(
            conn, name=name, kind=kind.value, config=checked, enabled=enabled
        )
        await _audit(conn, actor, "create", channel, {"enabled": enabled})
    return channel


async def update_channel(
    conn: Conn,
    *,
    actor: User,
    channel_id: int,
    name: str | None,
    config: dict[str, Any] | None,
    enabled: bool | None,
) -> NotificationChannel:
    async with conn.transaction():
        before = await channel_store.get_channel(conn, channel_id, lock=True)
        merged = None
        if config is not None:
            laid = {**before.config, **config}
            laid = {key: value for key, value in laid.items() if value is not None}
            merged = stored(parse_config(ChannelType(before.type), laid))
        channel = await channel_store.update_channel(
            conn, channel_id, name=name, config=merged, enabled=enabled
        )
        if enabled is False and before.enabled:
            await failing.channel_back(conn, channel.id, channel.name, "channel disabled")
        changed = sorted(
            field
            for field, value in (("name", name), ("config", config), ("enabled", enabled))
            if value is not None
        )
        # Which config keys changed, never their values (some are secrets).
        keys = sorted(config) if config is not None else []
        await _audit(conn, actor, "update", channel, {"changed": changed, "config_keys": keys})
    return channel


async def delete_channel(conn: Conn, *, actor: User, channel_id: int) -> None:
    """InUseError while an alert rule names the channel."""
    async with conn.transaction():
        channel = await channel_store.delete_channel(conn, channel_id)
        await failing.channel_back(conn, channel.id, channel.name, "channel deleted")
        await _audit(conn, actor, "delete", channel, {})


def trial_body(channel: NotificationChannel, now: datetime) -> dict[str, Any]:
    """The webhook body's shape (SPEC §6) with event "test": what a receiver can check."""
    stamp = now.astimezone(UTC).isoformat()
    return {
        "alert_id": None,
        "kind": "rule",
        "state": "firing",
        "event": "test",
        "rule": {"id": None, "name": "test"},
        "severity": "info",
        "device_id": None,
        "metric": None,
        "value": None,
        "started_at": stamp,
        "resolved_at": None,
        "acknowledged_by": None,
        "note": None,
        "summary": f'test notification from fieldline to channel "{channel.name}"',
        "sent_at": stamp,
    }


async def send_trial(conn: Conn, *, actor: User, channel_id: int) -> TrialOutcome:
    """Send a test notification now, whether the channel is enabled or not."""
    channel = await channel_store.get_channel(conn, channel_id)
    notice = Notice(
        orjson.dumps(trial_body(channel, datetime.now(UTC))), "test", f"test-{uuid.uuid4()}"
    )
    started = time.perf_counter()
    async with http_client() as client:
        try:
            delivery = await build_channel(channel.type, channel.config, client).send(notice)
        except ValueError as exc:
            delivery = failed(f"the channel's stored config is unusable: {exc}")
    duration_ms = (time.perf_counter() - started) * 1000
    await _audit(
        conn,
        actor,
        "test",
        channel,
        {"ok": delivery.ok, "status_code": delivery.status_code, "error": delivery.error},
    )
    return TrialOutcome(delivery, duration_ms)
