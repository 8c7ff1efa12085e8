"""The device registry: register, list, change, disable, delete, rotate credentials."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator, BaseModel, Field

from fieldline import devices
from fieldline.api.context import ApiContext
from fieldline.api.deps import Context, DbConn, Operator, Viewer
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.domain.devices import (
    DEVICE_ID_PATTERN,
    RESERVED_CLIENT_ID_PREFIX,
    ConnectionStatus,
    Device,
    is_reserved_client_id,
)
from fieldline.domain.vitals import BATTERY_METRICS, first_reported
from fieldline.storage import audit as audit_store
from fieldline.storage import devices as device_store
from fieldline.storage import rollouts as rollout_store
from fieldline.storage import telemetry as telemetry_store
from fieldline.storage.errors import GroupNotFoundError

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
        stored = {name: getattr(device, name) for name in cls.model_fields if name != "status"}
        return cls.model_validate(stored | {"status": status.value})


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

    @classmethod
    def of(cls, context: ApiContext, device_id: str, password: str) -> MqttCredentials:
        access = devices.mqtt_access(
            context.broker.endpoint,
            host=context.settings.advertised_mqtt_host,
            ca_file=context.settings.tls_ca_file,
            device_id=device_id,
            password=password,
        )
        return cls.model_validate(access, from_attributes=True)


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
    pending_update: bool = Field(
        description="A running or paused rollout has let the device in and its update is "
        "not over (told or waiting for its turn)"
    )


@contextlib.contextmanager
def _device_change() -> Iterator[None]:
    """A body naming a group that does not exist is a 422, not a missing resource."""
    try:
        yield
    except GroupNotFoundError as exc:
        raise ApiError(422, str(exc)) from exc


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


@router.post(
    "", status_code=201, response_model=DeviceCreated, responses={**_EXISTS, **_BROKER_DOWN}
)
async def create_device(
    body: DeviceCreate, user: Operator, conn: DbConn, context: Context
) -> DeviceCreated:
    """Register a device. The MQTT password is in this answer only."""
    with _device_change():
        registered = await devices.register_device(
            conn,
            broker=context.broker,
            publisher=context.publisher,
            topics=context.settings.topics,
            hash_iterations=context.settings.device_hash_iterations,
            actor=audit_store.user_actor(user.username),
            device_id=body.device_id,
            name=body.name,
            device_type=body.device_type,
            group=body.group,
            metadata=body.metadata,
        )
    device = registered.device
    return DeviceCreated(
        **DeviceOut.of(device, context).model_dump(),
        mqtt=MqttCredentials.of(context, device.device_id, registered.password),
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
    with _device_change():
        device = await devices.update_device(
            conn,
            broker=context.broker,
            publisher=context.publisher,
            topics=context.settings.topics,
            actor=audit_store.user_actor(user.username),
            device_id=device_id,
            changes=changes,
        )
    return DeviceOut.of(device, context)


@router.delete("/{device_id}", status_code=204, responses=_BROKER_DOWN)
async def delete_device(
    device_id: DeviceId, user: Operator, conn: DbConn, context: Context
) -> None:
    """Delete the device and drop its connection; its telemetry history is kept."""
    await devices.delete_device(
        conn,
        broker=context.broker,
        publisher=context.publisher,
        topics=context.settings.topics,
        actor=audit_store.user_actor(user.username),
        device_id=device_id,
    )


@router.post("/{device_id}/credentials", response_model=CredentialsRotated, responses=_BROKER_DOWN)
async def rotate_credentials(
    device_id: DeviceId, user: Operator, conn: DbConn, context: Context
) -> CredentialsRotated:
    """A new MQTT password; the old one stops working at once."""
    password = await devices.rotate_credentials(
        conn,
        broker=context.broker,
        hash_iterations=context.settings.device_hash_iterations,
        actor=audit_store.user_actor(user.username),
        device_id=device_id,
    )
    return CredentialsRotated(
        device_id=device_id, mqtt=MqttCredentials.of(context, device_id, password)
    )


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
        items=[StatusEventOut.model_validate(e, from_attributes=True) for e in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/{device_id}/status", response_model=DeviceStatus)
async def device_status(
    device_id: DeviceId, _: Viewer, conn: DbConn, context: Context
) -> DeviceStatus:
    device = DeviceOut.of(await device_store.get_device(conn, device_id), context)
    latest = {v.metric: v.value for v in await telemetry_store.latest_values(conn, [device_id])}
    return DeviceStatus(
        device_id=device_id,
        status=device.status,
        enabled=device.enabled,
        last_seen=device.last_seen,
        firmware_version=device.firmware_version,
        battery_voltage=first_reported(latest, BATTERY_METRICS),
        pending_update=await rollout_store.open_update(conn, device_id, waiting=True) is not None,
    )
