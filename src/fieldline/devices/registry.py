"""Registering, changing, disabling, deleting a device and rotating its credentials.

The registry in PostgreSQL is the source of truth and the broker mirrors it: each
change and its audit entry are one transaction with the broker update, so a broker
that refuses undoes the change (`BrokerUpdateError`). Configuration that follows a
device's group is delivered after the commit through `publisher` (None: the worker
delivers it) and never fails the change. Used by the API and self-provisioning; the
CLI and the worker may call them the same way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from fieldline.broker.base import Broker, BrokerError
from fieldline.broker.publisher import Publisher
from fieldline.devices.credentials import new_secret
from fieldline.devices.errors import BrokerUpdateError
from fieldline.domain.devices import Device, DeviceAccess
from fieldline.domain.topics import TopicScheme
from fieldline.downlink import config as config_delivery
from fieldline.storage import audit as audit_store
from fieldline.storage import devices as device_store
from fieldline.storage.db import Row

log = logging.getLogger(__name__)

Conn = AsyncConnection[Row]


@dataclass(frozen=True, slots=True)
class Registered:
    device: Device
    password: str  # the device's MQTT password: only here, the registry keeps its hash


@contextlib.asynccontextmanager
async def _broker_update(device_id: str) -> AsyncIterator[None]:
    """Inside the caller's transaction: a broker failure undoes the registry change."""
    try:
        yield
    except BrokerError as exc:
        log.error("broker update failed", extra={"device_id": device_id, "error": str(exc)})
        raise BrokerUpdateError(str(exc)) from exc


async def _apply(broker: Broker, access: DeviceAccess, password: str | None = None) -> None:
    async with _broker_update(access.device_id):
        await broker.apply(access, password=password)


async def register_device(
    conn: Conn,
    *,
    broker: Broker,
    publisher: Publisher | None,
    topics: TopicScheme,
    hash_iterations: int,
    actor: str,
    device_id: str,
    name: str = "",
    device_type: str = "",
    group: str | None = None,
    metadata: dict[str, Any] | None = None,
    action: str = "device.create",
) -> Registered:
    """Create a device with a new secret, tell the broker, audit it as `action`."""
    password, secret_hash = await new_secret(hash_iterations)
    async with conn.transaction():
        device = await device_store.create_device(
            conn,
            device_id=device_id,
            name=name,
            device_type=device_type,
            group=group,
            metadata=metadata or {},
            secret_hash=secret_hash,
        )
        await audit_store.record(
            conn,
            actor=actor,
            action=action,
            target_type="device",
            target_id=device_id,
            detail={"group": group, "device_type": device_type},
        )
        await _apply(broker, DeviceAccess(device.device_id, secret_hash, True), password)
    if group is not None:  # its group's configuration becomes its own
        await config_delivery.follow_group(conn, publisher, topics, device_id, actor=actor)
    return Registered(device, password)


async def update_device(
    conn: Conn,
    *,
    broker: Broker,
    publisher: Publisher | None,
    topics: TopicScheme,
    actor: str,
    device_id: str,
    changes: dict[str, Any],
) -> Device:
    """Apply `changes` (name, device_type, group, metadata, enabled).

    This is also how a device is enabled or disabled (`{"enabled": False}`): audited
    as such, it reaches the broker at once, and a disabled device's session is dropped.
    """
    async with conn.transaction():
        before = await device_store.get_device(conn, device_id)
        device = await device_store.update_device(conn, device_id, changes)
        toggled = device.enabled != before.enabled
        action = "device.update"
        if toggled:
            action = "device.enable" if device.enabled else "device.disable"
        await audit_store.record(
            conn,
            actor=actor,
            action=action,
            target_type="device",
            target_id=device_id,
            detail={"changes": sorted(changes)},
        )
        if toggled:
            await _apply(broker, await device_store.device_access(conn, device_id))
        if toggled and not device.enabled:  # the broker dropped its session
            await device_store.mark_dropped(conn, device_id, reason="disabled")
            device = await device_store.get_device(conn, device_id)
    if "group" in changes:  # another group's configuration applies now
        await config_delivery.follow_group(conn, publisher, topics, device_id, actor=actor)
    return device


async def delete_device(
    conn: Conn,
    *,
    broker: Broker,
    publisher: Publisher | None,
    topics: TopicScheme,
    actor: str,
    device_id: str,
) -> None:
    """Delete the device and drop its connection; its telemetry history is kept."""
    async with conn.transaction():
        await device_store.mark_dropped(conn, device_id, reason="deleted")
        await device_store.delete_device(conn, device_id)
        await audit_store.record(
            conn,
            actor=actor,
            action="device.delete",
            target_type="device",
            target_id=device_id,
        )
        async with _broker_update(device_id):
            await broker.remove(device_id)
    await config_delivery.forget(publisher, topics, device_id)


async def rotate_credentials(
    conn: Conn,
    *,
    broker: Broker,
    hash_iterations: int,
    actor: str,
    device_id: str,
    action: str = "device.rotate_credentials",
    detail: dict[str, Any] | None = None,
) -> str:
    """A new MQTT password, answered; the old one stops working at once.

    Runs in the caller's transaction when there is one (self-provisioning counts
    the key's use in the same one).
    """
    password, secret_hash = await new_secret(hash_iterations)
    async with conn.transaction():
        await device_store.set_secret(conn, device_id, secret_hash)
        await audit_store.record(
            conn,
            actor=actor,
            action=action,
            target_type="device",
            target_id=device_id,
            detail=detail,
        )
        await _apply(broker, await device_store.device_access(conn, device_id), password)
        # The broker dropped the session of the old password; the device comes back online
        # when it reconnects with the new one.
        await device_store.mark_dropped(conn, device_id, reason="credentials_rotated")
    return password
