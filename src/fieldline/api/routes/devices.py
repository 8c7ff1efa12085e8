"""The device registry: register, list, change, disable, delete, rotate credentials."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from psycopg import AsyncConnection
from pydantic import AfterValidator, BaseModel, Field

from fieldline.api.context import ApiContext
from fieldline.api.deps import Context, DbConn, Operator, Viewer
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.broker.base import BrokerError
from fieldline.domain.devices import (
    DEVICE_ID_PATTERN,
    RESERVED_CLIENT_ID_PREFIX,
    ConnectionStatus,
    Device,
    DeviceAccess,
    is_reserved_client_id,
)
from fieldline.domain.topics import TopicScheme
from fieldline.downlink import config as config_delivery
from fieldline.security.passwords import generate_secret, hash_secret
from fieldline.storage import audit as audit_store
from fieldline.storage import devices as device_store
from fieldline.storage import telemetry as telemetry_store
from fieldline.storage.db import Row
from fieldline.storage.errors import GroupNotFoundError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN.pattern, max_length=128)]

# Error answers particular to these routes (app.py adds those every route shares).
_BROKER_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"description": "broker_unavailable: the broker could not be updated; nothing changed"}
}
_EXISTS: dict[int | str, dict[str, Any]] = {
    409: {"description": "conflict: a device with this id exists"}
}


class DeviceOut(BaseModel):
    device_id: str
    name: str
    device_type: str
    group: str | None
    metadata: dict[str, Any]
    enabled: bool
    status: str
    last_seen: datetime | None
    firmware_version: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, device: Device, context: ApiContext) -> DeviceOut:
        status = device.status(
            now=datetime.now(UTC),
            online_timeout=timedelta(seconds=context.settings.online_timeout_seconds),
        )
        if not device.enabled and status is ConnectionStatus.ONLINE:
            # The broker refuses it: a reading in flight when it was disabled says nothing.
            status = ConnectionStatus.OFFLINE
        return cls(
            device_id=device.device_id,
            name=device.name,
            device_type=device.device_type,
            group=device.group,
            metadata=device.metadata,
            enabled=device.enabled,
            status=status.value,
            last_seen=device.last_seen,
            firmware_version=device.firmware_version,
            created_at=device.created_at,
            updated_at=device.updated_at,
        )


def _not_reserved(device_id: str) -> str:
    if is_reserved_client_id(device_id):
        raise ValueError(
            f"ids starting with {RESERVED_CLIENT_ID_PREFIX!r} are fieldline's own MQTT client ids"
        )
    return device_id


# The id of a device being registered: also its MQTT username and client id.
NewDeviceId = Annotated[
    str,
    Field(
        pattern=DEVICE_ID_PATTERN.pattern,
        max_length=128,
        description="Letters, digits and `_ . : -`, not starting with `fieldline-`; "
        "also the MQTT username and client id.",
    ),
    AfterValidator(_not_reserved),
]


class DeviceCreate(BaseModel):
    device_id: NewDeviceId
    name: str = Field("", max_length=256)
    device_type: str = Field("", max_length=128)
    group: str | None = Field(None, max_length=128)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DevicePatch(BaseModel):
    name: str | None = Field(None, max_length=256)
    device_type: str | None = Field(None, max_length=128)
    group: str | None = Field(None, max_length=128)
    metadata: dict[str, Any] | None = None
    enabled: bool | None = Field(None, description="false disables the device at once")


class MqttCredentials(BaseModel):
    username: str
    password: str = Field(description="Shown only in this answer; stored as a salted hash.")
    host: str
    port: int = Field(
        description="MQTT port; the TLS port when the broker accepts only TLS connections."
    )
    tls_port: int | None = Field(description="MQTT over TLS port; null when there is none.")
    ca_certificate: str | None = Field(
        description="PEM of the CA the broker's TLS certificate is signed by, for the device "
        "to verify the broker with; null without TLS or when the broker's certificate comes "
        "from a public CA."
    )


class DeviceCreated(DeviceOut):
    mqtt: MqttCredentials


class CredentialsRotated(BaseModel):
    device_id: str
    mqtt: MqttCredentials


class DeviceList(BaseModel):
    items: list[DeviceOut]
    next_cursor: str | None


class DeviceStatus(BaseModel):
    device_id: str
    status: str
    enabled: bool
    last_seen: datetime | None
    firmware_version: str | None
    battery_voltage: float | None
    pending_update: bool


@contextlib.asynccontextmanager
async def _known_group() -> AsyncIterator[None]:
    """A body naming a group that does not exist is a 422, not a missing resource."""
    try:
        yield
    except GroupNotFoundError as exc:
        raise ApiError(422, str(exc)) from exc


async def _new_secret(context: ApiContext) -> tuple[str, str]:
    password = generate_secret()
    hashed = await asyncio.to_thread(
        hash_secret, password, iterations=context.settings.device_hash_iterations
    )
    return password, hashed.encode()


def _credentials(context: ApiContext, device_id: str, password: str) -> MqttCredentials:
    endpoint = context.broker.endpoint
    return MqttCredentials(
        username=device_id,
        password=password,
        host=context.settings.advertised_mqtt_host,
        port=endpoint.port,
        # The adapter's, not the setting's: a managed broker settles port 0 on a free port.
        tls_port=endpoint.tls_port,
        ca_certificate=_ca_certificate(context) if endpoint.tls_port is not None else None,
    )


def _ca_certificate(context: ApiContext) -> str | None:
    """The CA PEM devices verify the broker with, if fieldline has one.

    Never raises: the device is already registered when this runs, and its
    password must still reach the caller.
    """
    path = context.settings.tls_ca_file
    try:
        pem = path.read_text()
    except FileNotFoundError:
        return None  # an external broker with a publicly trusted certificate
    except (OSError, UnicodeDecodeError) as exc:
        log.error("cannot read the CA certificate", extra={"path": str(path), "error": str(exc)})
        return None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        log.error("the CA certificate file holds no PEM certificate", extra={"path": str(path)})
        return None
    return pem


@contextlib.asynccontextmanager
async def _broker_update(device_id: str) -> AsyncIterator[None]:
    """Inside the caller's transaction: a broker failure undoes the registry change."""
    try:
        yield
    except BrokerError as exc:
        log.error("broker update failed", extra={"device_id": device_id, "error": str(exc)})
        raise ApiError(
            503,
            f"the broker could not be updated, nothing was changed: {exc}",
            code="broker_unavailable",
        ) from exc


async def _apply_to_broker(
    context: ApiContext, access: DeviceAccess, password: str | None = None
) -> None:
    async with _broker_update(access.device_id):
        await context.broker.apply(access, password=password)


@router.get("", response_model=DeviceList)
async def list_devices(
    _: Viewer,
    conn: DbConn,
    context: Context,
    limit: Limit = 100,
    cursor: Cursor = None,
    group: Annotated[str | None, Query(max_length=128)] = None,
) -> DeviceList:
    page = await device_store.list_devices(conn, limit=limit, cursor=cursor, group=group)
    return DeviceList(
        items=[DeviceOut.of(d, context) for d in page.items], next_cursor=page.next_cursor
    )


async def register_device(
    conn: AsyncConnection[Row],
    context: ApiContext,
    *,
    actor: str,
    device_id: str,
    name: str = "",
    device_type: str = "",
    group: str | None = None,
    metadata: dict[str, Any] | None = None,
    action: str = "device.create",
) -> tuple[Device, str]:
    """Create a device with a new secret, tell the broker, audit it; answer its password.

    One transaction: if the broker refuses, nothing is registered. Used by
    registration through the API and by self-provisioning.
    """
    password, secret_hash = await _new_secret(context)
    async with _known_group(), conn.transaction():
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
        await _apply_to_broker(context, DeviceAccess(device.device_id, secret_hash, True), password)
    if group is not None:  # its group's configuration becomes its own
        await config_delivery.follow_group(
            conn,
            context.publisher,
            TopicScheme(context.settings.topic_prefix),
            device_id,
            actor=actor,
        )
    return device, password


@router.post(
    "", status_code=201, response_model=DeviceCreated, responses={**_EXISTS, **_BROKER_DOWN}
)
async def create_device(
    body: DeviceCreate, user: Operator, conn: DbConn, context: Context
) -> DeviceCreated:
    """Register a device. The MQTT password is in this answer only."""
    device, password = await register_device(
        conn,
        context,
        actor=audit_store.user_actor(user.username),
        device_id=body.device_id,
        name=body.name,
        device_type=body.device_type,
        group=body.group,
        metadata=body.metadata,
    )
    return DeviceCreated(
        **DeviceOut.of(device, context).model_dump(),
        mqtt=_credentials(context, device.device_id, password),
    )


@router.get("/{device_id}", response_model=DeviceOut)
async def get_device(device_id: DeviceId, _: Viewer, conn: DbConn, context: Context) -> DeviceOut:
    return DeviceOut.of(await device_store.get_device(conn, device_id), context)


@router.patch("/{device_id}", response_model=DeviceOut, responses=_BROKER_DOWN)
async def update_device(
    device_id: DeviceId, body: DevicePatch, user: Operator, conn: DbConn, context: Context
) -> DeviceOut:
    changes = body.model_dump(exclude_unset=True)
    for field in ("name", "device_type", "metadata", "enabled"):
        if field in changes and changes[field] is None:
            raise ApiError(422, f"{field} cannot be null")
    async with _known_group(), conn.transaction():
        before = await device_store.get_device(conn, device_id)
        device = await device_store.update_device(conn, device_id, changes)
        toggled = device.enabled != before.enabled
        action = "device.update"
        if toggled:
            action = "device.enable" if device.enabled else "device.disable"
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action=action,
            target_type="device",
            target_id=device_id,
            detail={"changes": sorted(changes)},
        )
        if toggled:
            await _apply_to_broker(context, await device_store.device_access(conn, device_id))
        if toggled and not device.enabled:  # the broker dropped its session
            await device_store.mark_dropped(conn, device_id, reason="disabled")
            device = await device_store.get_device(conn, device_id)
    if "group" in changes:  # another group's configuration applies now
        await config_delivery.follow_group(
            conn,
            context.publisher,
            TopicScheme(context.settings.topic_prefix),
            device_id,
            actor=audit_store.user_actor(user.username),
        )
    return DeviceOut.of(device, context)


@router.delete("/{device_id}", status_code=204, responses=_BROKER_DOWN)
async def delete_device(
    device_id: DeviceId, user: Operator, conn: DbConn, context: Context
) -> None:
    """Delete the device and drop its connection; its telemetry history is kept."""
    async with conn.transaction():
        await device_store.mark_dropped(conn, device_id, reason="deleted")
        await device_store.delete_device(conn, device_id)
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="device.delete",
            target_type="device",
            target_id=device_id,
        )
        async with _broker_update(device_id):
            await context.broker.remove(device_id)
    await config_delivery.forget(
        context.publisher, TopicScheme(context.settings.topic_prefix), device_id
    )


@router.post("/{device_id}/credentials", response_model=CredentialsRotated, responses=_BROKER_DOWN)
async def rotate_credentials(
    device_id: DeviceId, user: Operator, conn: DbConn, context: Context
) -> CredentialsRotated:
    """A new MQTT password; the old one stops working at once."""
    password, secret_hash = await _new_secret(context)
    async with conn.transaction():
        await device_store.set_secret(conn, device_id, secret_hash)
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="device.rotate_credentials",
            target_type="device",
            target_id=device_id,
        )
        await _apply_to_broker(context, await device_store.device_access(conn, device_id), password)
        # The broker dropped the session of the old password; the device comes back online
        # when it reconnects with the new one.
        await device_store.mark_dropped(conn, device_id, reason="credentials_rotated")
    return CredentialsRotated(device_id=device_id, mqtt=_credentials(context, device_id, password))


class StatusEventOut(BaseModel):
    time: datetime
    status: str
    detail: dict[str, Any] = Field(description='e.g. {"reason": "timeout"} or the last will')


class StatusHistory(BaseModel):
    items: list[StatusEventOut]
    next_cursor: str | None


@router.get("/{device_id}/status-history", response_model=StatusHistory)
async def status_history(
    device_id: DeviceId, _: Viewer, conn: DbConn, limit: Limit = 50, cursor: Cursor = None
) -> StatusHistory:
    """When the device came online and went offline, newest first."""
    page = await device_store.status_history(conn, device_id, limit=limit, cursor=cursor)
    return StatusHistory(
        items=[StatusEventOut(time=e.time, status=e.status, detail=e.detail) for e in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/{device_id}/status", response_model=DeviceStatus)
async def device_status(
    device_id: DeviceId, _: Viewer, conn: DbConn, context: Context
) -> DeviceStatus:
    device = DeviceOut.of(await device_store.get_device(conn, device_id), context)
    latest = {v.metric: v.value for v in await telemetry_store.latest_values(conn, [device_id])}
    battery = latest.get("battery_voltage", latest.get("battery"))
    return DeviceStatus(
        device_id=device_id,
        status=device.status,
        enabled=device.enabled,
        last_seen=device.last_seen,
        firmware_version=device.firmware_version,
        battery_voltage=battery,
        pending_update=False,
    )
