"""Zero-touch provisioning: devices register themselves with a request signed by a key.

Operators create and revoke provisioning keys (SPEC §3a); `POST /provision` (no user, HMAC
signature) creates the device and answers its MQTT credentials; an operator may
allow an existing device to provision itself once more, which rotates its
credentials. docs/devices.md ("Zero-touch provisioning") is the device side.

Order of checks on `/provision`, so a caller learns only what it has earned:
rate limit and size (anyone), then the key id, the signature, the clock, replay
and the key's state (only a caller holding the secret learns that a key is
revoked, expired or used up), then the body, scope and the device.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fieldline import devices
from fieldline.api.auth_limits import client_address
from fieldline.api.context import ApiContext
from fieldline.api.deps import Context, DbConn, Operator
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.api.routes.devices import (
    DeviceId,
    MqttCredentials,
    NewDeviceId,
)
from fieldline.devices.errors import (
    AlreadyProvisionedError,
    KeyUnavailableError,
    OutOfScopeError,
    ProvisioningRefusedError,
)
from fieldline.ingest.ratelimit import DeviceRateLimiter
from fieldline.security.provisioning import DEFAULT_KEY_ID, SecretBox, new_key
from fieldline.storage import audit as audit_store
from fieldline.storage import provisioning as store
from fieldline.storage.errors import GroupNotFoundError
from fieldline.storage.provisioning import KeyState, ProvisioningKey

log = logging.getLogger(__name__)
router = APIRouter(tags=["provisioning"])

MAX_BODY_BYTES = 16_384
KEY_ID_MAX_LENGTH = 64
REPROVISION_WINDOW_SECONDS = 3600
_WWW_AUTHENTICATE = {"WWW-Authenticate": 'HMAC-SHA256 realm="fieldline provisioning"'}


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    group: str | None = Field(
        None, max_length=128, description="Devices provisioned with the key join this group."
    )
    device_type: str | None = Field(
        None, min_length=1, max_length=128, description="Devices provisioned get this type."
    )
    expires_at: datetime | None = Field(None, description="ISO 8601; without an offset, UTC.")
    max_uses: int | None = Field(
        None, ge=1, le=2_147_483_647, description="Provisionings allowed; null: no limit."
    )


class KeyOut(BaseModel):
    key_id: str
    name: str
    group: str | None
    device_type: str | None
    expires_at: datetime | None
    max_uses: int | None
    uses: int
    state: KeyState
    revoked: bool
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ProvisioningKey, now: datetime) -> KeyOut:
        computed = {"state": key.state(now), "revoked": key.revoked_at is not None}
        stored = {name: getattr(key, name) for name in cls.model_fields if name not in computed}
        return cls.model_validate(stored | computed)


class KeyCreated(KeyOut):
    secret: str = Field(description="Shown only in this answer; devices sign with it.")


class KeyList(BaseModel):
    items: list[KeyOut]
    next_cursor: str | None


class ProvisionRequest(BaseModel):
    """What a device sends; other fields are ignored, and the group comes from the key."""

    model_config = ConfigDict(extra="ignore")

    device_id: NewDeviceId
    device_type: str | None = Field(None, max_length=128)
    name: str = Field("", max_length=256)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name", "device_type", "metadata")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        """PostgreSQL text and jsonb cannot hold U+0000: refuse it here, not with a 500."""
        if _holds_nul(value):
            raise ValueError("must not contain U+0000")
        return value


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


class Provisioned(MqttCredentials):
    device_id: str


class ReprovisionAllow(BaseModel):
    valid_for_seconds: int = Field(REPROVISION_WINDOW_SECONDS, ge=60, le=30 * 86_400)


class ReprovisionAllowed(BaseModel):
    device_id: str
    expires_at: datetime


def _box(context: ApiContext) -> SecretBox:
    return SecretBox.from_secret_key(context.secret_key)


def _default_secret(context: ApiContext) -> str | None:
    configured = context.settings.provisioning_secret
    return configured.get_secret_value() if configured is not None else None


def _refused(code: str, message: str) -> ApiError:
    return ApiError(401, message, code=code, headers=_WWW_AUTHENTICATE)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.post("/api/v1/provisioning-keys", status_code=201, response_model=KeyCreated)
async def create_key(body: KeyCreate, user: Operator, conn: DbConn, context: Context) -> KeyCreated:
    """A key devices provision themselves with. The secret is in this answer only."""
    now = datetime.now(UTC)
    expires_at = _utc(body.expires_at)
    if expires_at is not None and expires_at <= now:
        raise ApiError(422, "expires_at: must be in the future")
    key_id, secret = new_key()
    async with conn.transaction():
        try:
            key = await store.create_key(
                conn,
                key_id=key_id,
                name=body.name,
                group=body.group,
                device_type=body.device_type,
                expires_at=expires_at,
                max_uses=body.max_uses,
                sealed_secret=_box(context).seal(secret, key_id=key_id),
                created_by=audit_store.user_actor(user.username),
            )
        except GroupNotFoundError as exc:
            raise ApiError(422, str(exc)) from exc
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="provisioning_key.create",
            target_type="provisioning_key",
            target_id=key_id,
            detail={
                "name": body.name,
                "group": body.group,
                "device_type": body.device_type,
                "expires_at": expires_at.isoformat() if expires_at else None,
                "max_uses": body.max_uses,
            },
        )
    return KeyCreated(**KeyOut.of(key, now).model_dump(), secret=secret)


@router.get("/api/v1/provisioning-keys", response_model=KeyList)
async def list_keys(
    _: Operator, conn: DbConn, limit: Limit = 100, cursor: Cursor = None
) -> KeyList:
    """Every key, revoked ones too; the default key from settings is not listed."""
    now = datetime.now(UTC)
    page = await store.list_keys(conn, limit=limit, cursor=cursor)
    return KeyList(items=[KeyOut.of(k, now) for k in page.items], next_cursor=page.next_cursor)


@router.delete("/api/v1/provisioning-keys/{key_id}", status_code=204)
async def revoke_key(
    key_id: Annotated[str, Path(max_length=KEY_ID_MAX_LENGTH)],
    user: Operator,
    conn: DbConn,
    context: Context,
) -> None:
    """Revoke a key at once; it stays listed. Devices it provisioned keep their credentials."""
    if key_id == DEFAULT_KEY_ID and context.settings.provisioning_secret is not None:
        raise ApiError(
            409, "the default key is FIELDLINE_PROVISIONING_SECRET; unset that setting to end it"
        )
    async with conn.transaction():
        if await store.revoke_key(conn, key_id):
            await audit_store.record(
                conn,
                actor=audit_store.user_actor(user.username),
                action="provisioning_key.revoke",
                target_type="provisioning_key",
                target_id=key_id,
            )


@router.post("/api/v1/devices/{device_id}/allow-reprovision", response_model=ReprovisionAllowed)
async def allow_reprovision(
    device_id: DeviceId, user: Operator, conn: DbConn, body: ReprovisionAllow | None = None
) -> ReprovisionAllowed:
    """Let the device provision itself once more (new credentials) within the time given."""
    valid_for = body.valid_for_seconds if body else REPROVISION_WINDOW_SECONDS
    expires_at = datetime.now(UTC) + timedelta(seconds=valid_for)
    async with conn.transaction():
        await store.allow_reprovision(
            conn, device_id, allowed_by=audit_store.user_actor(user.username), expires_at=expires_at
        )
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="device.allow_reprovision",
            target_type="device",
            target_id=device_id,
            detail={"valid_for_seconds": valid_for},
        )
    return ReprovisionAllowed(device_id=device_id, expires_at=expires_at)


def _limiter(request: Request, context: ApiContext) -> DeviceRateLimiter:
    """One limiter per application (so per process), made on first use."""
    state = request.app.state
    limiter: DeviceRateLimiter | None = getattr(state, "provisioning_limiter", None)
    if limiter is None:
        settings = context.settings
        limiter = DeviceRateLimiter(
            settings.provisioning_rate_limit, settings.provisioning_rate_burst
        )
        state.provisioning_limiter = limiter
    return limiter


async def _rate_limit(request: Request, context: Context) -> None:
    """Every attempt counts, failed ones too; runs before a database connection is taken.

    Async so that it runs on the event loop: the limiter is not thread-safe.
    """
    limiter = _limiter(request, context)
    if not limiter.allow(client_address(request), time.monotonic()):
        retry_after = max(1, math.ceil(1 / limiter.rate))
        raise ApiError(
            429,
            f"too many provisioning requests from this address; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, f"a provisioning request is at most {MAX_BODY_BYTES} bytes")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


def _parse(body: bytes) -> ProvisionRequest:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, f"the body is not JSON: {exc}") from exc
    try:
        return ProvisionRequest.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from exc


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The provisioning use-case's refusals as SPEC §3 answers them."""
    try:
        yield
    except ProvisioningRefusedError as exc:
        raise _refused(exc.code, exc.message) from exc
    except KeyUnavailableError as exc:
        raise ApiError(503, str(exc), code="key_unavailable") from exc
    except OutOfScopeError as exc:
        raise ApiError(403, str(exc), code="out_of_scope") from exc
    except AlreadyProvisionedError as exc:
        raise ApiError(
            409,
            f"device {exc.device_id!r} is provisioned already; an operator can allow it to "
            "provision again (POST /api/v1/devices/{device_id}/allow-reprovision)",
            code="already_provisioned",
        ) from exc
    except GroupNotFoundError as exc:
        raise ApiError(422, str(exc)) from exc


@router.post(
    "/provision",
    status_code=201,
    response_model=Provisioned,
    dependencies=[Depends(_rate_limit)],
    responses={
        200: {"description": "An existing device, allowed to, got new credentials."},
        401: {"description": "unknown, expired or used-up key, bad signature or stale time"},
        403: {"description": "the device is outside the key's group or type"},
        409: {"description": "the device is provisioned already and not allowed again"},
        429: {"description": "too many provisioning requests from this address"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ProvisionRequest.model_json_schema()}},
        }
    },
)
async def provision(
    request: Request,
    response: Response,
    conn: DbConn,
    context: Context,
    x_key_id: Annotated[str | None, Header(description="Provisioning key id")] = None,
    x_timestamp: Annotated[str | None, Header(description="Epoch seconds")] = None,
    x_signature: Annotated[
        str | None, Header(description='Hex HMAC-SHA256 of "{X-Timestamp}.{raw body}"')
    ] = None,
) -> Provisioned:
    """A device registers itself, signed by a provisioning key; answers its MQTT credentials."""
    raw = await _read_body(request)
    try:
        with _refusals():
            signer = await devices.authenticate(
                conn,
                box=_box(context),
                default_secret=_default_secret(context),
                key_id=x_key_id,
                timestamp=x_timestamp,
                signature=x_signature,
                body=raw,
            )
    except ApiError as exc:
        log.info(
            "provisioning refused",
            extra={"key_id": (x_key_id or "")[:KEY_ID_MAX_LENGTH], "code": exc.code},
        )
        raise
    body = _parse(raw)
    with _refusals():
        provisioned = await devices.provision(
            conn,
            broker=context.broker,
            publisher=context.publisher,
            topics=context.settings.topics,
            hash_iterations=context.settings.device_hash_iterations,
            signer=signer,
            device_id=body.device_id,
            device_type=body.device_type,
            name=body.name,
            metadata=body.metadata,
        )
    if not provisioned.created:
        response.status_code = 200
    log.info(
        "device provisioned",
        extra={
            "device_id": body.device_id,
            "key_id": signer.key_id,
            "status": response.status_code,
        },
    )
    return Provisioned(
        device_id=body.device_id,
        **MqttCredentials.of(context, body.device_id, provisioned.password).model_dump(),
    )
