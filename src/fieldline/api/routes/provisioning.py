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

import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from psycopg import AsyncConnection
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fieldline.api.auth_limits import client_address
from fieldline.api.context import ApiContext
from fieldline.api.deps import Context, DbConn, Operator
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.api.routes.devices import (
    DeviceId,
    MqttCredentials,
    NewDeviceId,
    _apply_to_broker,
    _credentials,
    _new_secret,
    register_device,
)
from fieldline.domain.devices import Device
from fieldline.ingest.ratelimit import DeviceRateLimiter
from fieldline.security.provisioning import (
    CLOCK_TOLERANCE_SECONDS,
    DEFAULT_KEY_ID,
    SealedSecretError,
    SecretBox,
    canonical_signature,
    is_fresh,
    new_key,
    parse_timestamp,
    signature_matches,
)
from fieldline.storage import audit as audit_store
from fieldline.storage import devices as device_store
from fieldline.storage import provisioning as store
from fieldline.storage.db import Row
from fieldline.storage.errors import AlreadyExistsError, GroupNotFoundError, NotFoundError
from fieldline.storage.provisioning import KeyState, ProvisioningKey

log = logging.getLogger(__name__)
router = APIRouter(tags=["provisioning"])

MAX_BODY_BYTES = 16_384
KEY_ID_MAX_LENGTH = 64
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
REPROVISION_WINDOW_SECONDS = 3600
_WWW_AUTHENTICATE = {"WWW-Authenticate": 'HMAC-SHA256 realm="fieldline provisioning"'}
_REFUSED_STATE = {
    KeyState.REVOKED: ("key_revoked", "this provisioning key has been revoked"),
    KeyState.EXPIRED: ("key_expired", "this provisioning key has expired"),
    KeyState.EXHAUSTED: (
        "key_exhausted",
        "this provisioning key has provisioned as many devices as it may (max_uses)",
    ),
}


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
        return cls(
            key_id=key.key_id,
            name=key.name,
            group=key.group,
            device_type=key.device_type,
            expires_at=key.expires_at,
            max_uses=key.max_uses,
            uses=key.uses,
            state=key.state(now),
            revoked=key.revoked_at is not None,
            created_by=key.created_by,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )


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


@dataclass(frozen=True, slots=True)
class _Signer:
    key_id: str
    key: ProvisioningKey | None  # None: the default key from settings, unscoped and unlimited

    @property
    def actor(self) -> str:
        return audit_store.provisioning_key_actor(self.key_id)


def _box(context: ApiContext) -> SecretBox:
    return SecretBox.from_secret_key(context.secret_key)


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


async def _secret_of(
    conn: AsyncConnection[Row], context: ApiContext, key_id: str
) -> tuple[str, ProvisioningKey | None]:
    unknown = _refused("unknown_key", "X-Key-Id names no provisioning key")
    if key_id == DEFAULT_KEY_ID:
        configured = context.settings.provisioning_secret
        if configured is None:
            raise unknown
        return configured.get_secret_value(), None
    found = await store.get_key(conn, key_id) if _KEY_ID.fullmatch(key_id) else None
    if found is None:
        raise unknown
    key, sealed = found
    try:
        return _box(context).open(sealed, key_id=key_id), key
    except SealedSecretError:
        log.error(
            "provisioning key does not decrypt; was the secret key changed?",
            extra={"key_id": key_id},
        )
        raise ApiError(
            503,
            "this provisioning key cannot be used on this server; ask its operator",
            code="key_unavailable",
        ) from None


def _refuse_state(key: ProvisioningKey, now: datetime) -> None:
    state = key.state(now)
    if state is not KeyState.ACTIVE:
        raise _refused(*_REFUSED_STATE[state])


async def _authenticate(
    conn: AsyncConnection[Row],
    context: ApiContext,
    *,
    key_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
) -> _Signer:
    if not key_id or not timestamp or not signature:
        raise _refused(
            "missing_signature", "X-Key-Id, X-Timestamp and X-Signature headers are required"
        )
    secret, key = await _secret_of(conn, context, key_id)
    if not signature_matches(secret, timestamp, body, signature):
        raise _refused(
            "bad_signature",
            'X-Signature is not the hex HMAC-SHA256 of "{X-Timestamp}.{body}" under this key',
        )
    now = time.time()
    signed_at = parse_timestamp(timestamp)
    if signed_at is None or not is_fresh(signed_at, now):
        offset = "" if signed_at is None else f" (it is {signed_at - now:+.0f} s off)"
        raise _refused(
            "stale_timestamp",
            f"X-Timestamp must be the current epoch seconds within "
            f"±{CLOCK_TOLERANCE_SECONDS} s of the server's clock{offset}",
        )
    canonical = canonical_signature(signature)
    assert canonical is not None  # it matched
    if not await store.remember_signature(
        conn,
        key_id=key_id,
        signature=canonical,
        signed_at=datetime.fromtimestamp(signed_at, UTC),
    ):
        raise _refused("replayed", "this signature was used before; sign each request anew")
    if key is not None:
        _refuse_state(key, datetime.now(UTC))
    return _Signer(key_id, key)


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


def _device_type(key: ProvisioningKey | None, asked: str | None) -> str:
    scoped = key.device_type if key else None
    if scoped is None:
        return asked or ""
    if asked and asked != scoped:
        raise ApiError(
            403, f"this key provisions devices of type {scoped!r} only", code="out_of_scope"
        )
    return scoped


def _check_scope(key: ProvisioningKey | None, device: Device) -> None:
    """A scoped key may provision again only devices inside its scope."""
    if key is None:
        return
    if (key.group is not None and device.group != key.group) or (
        key.device_type is not None and device.device_type != key.device_type
    ):
        raise ApiError(403, "this device is outside this key's group or type", code="out_of_scope")


async def _use(conn: AsyncConnection[Row], signer: _Signer, now: datetime) -> None:
    """Count the use in the caller's transaction; a key used up meanwhile refuses."""
    if signer.key is None or await store.use_key(conn, signer.key_id, now):
        return
    found = await store.get_key(conn, signer.key_id)
    state = found[0].state(now) if found else KeyState.REVOKED
    raise _refused(*_REFUSED_STATE.get(state, _REFUSED_STATE[KeyState.EXHAUSTED]))


def _already_provisioned(device_id: str) -> ApiError:
    return ApiError(
        409,
        f"device {device_id!r} is provisioned already; an operator can allow it to provision "
        "again (POST /api/v1/devices/{device_id}/allow-reprovision)",
        code="already_provisioned",
    )


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
        signer = await _authenticate(
            conn,
            context,
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
    device_type = _device_type(signer.key, body.device_type)
    now = datetime.now(UTC)
    try:
        await device_store.get_device(conn, body.device_id)
    except NotFoundError:
        password = await _create(conn, context, signer, body, device_type, now)
    else:
        password = await _rotate(conn, context, signer, body.device_id, now)
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
        **_credentials(context, body.device_id, password).model_dump(),
    )


async def _create(
    conn: AsyncConnection[Row],
    context: ApiContext,
    signer: _Signer,
    body: ProvisionRequest,
    device_type: str,
    now: datetime,
) -> str:
    async with conn.transaction():
        await _use(conn, signer, now)
        try:
            _, password = await register_device(
                conn,
                context,
                actor=signer.actor,
                device_id=body.device_id,
                name=body.name,
                device_type=device_type,
                group=signer.key.group if signer.key else None,
                metadata=body.metadata,
                action="device.provision",
            )
        except AlreadyExistsError as exc:  # another request created it since we looked
            raise _already_provisioned(body.device_id) from exc
    return password


async def _rotate(
    conn: AsyncConnection[Row], context: ApiContext, signer: _Signer, device_id: str, now: datetime
) -> str:
    """Provision an existing device again if an operator allowed it: new credentials."""
    async with conn.transaction():
        if not await store.take_reprovision_allowance(conn, device_id, now):
            raise _already_provisioned(device_id)
        device = await device_store.get_device(conn, device_id)
        _check_scope(signer.key, device)
        password, secret_hash = await _new_secret(context)
        await _use(conn, signer, now)
        await device_store.set_secret(conn, device_id, secret_hash)
        await audit_store.record(
            conn,
            actor=signer.actor,
            action="device.provision",
            target_type="device",
            target_id=device_id,
            detail={"group": device.group, "device_type": device.device_type, "reprovision": True},
        )
        await _apply_to_broker(context, await device_store.device_access(conn, device_id), password)
        # As a rotation through the API: the broker dropped the old password's session.
        await device_store.mark_dropped(conn, device_id, reason="credentials_rotated")
    return password
