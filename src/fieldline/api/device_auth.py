"""How a device proves who it is to HTTP endpoints (SPEC §3): its MQTT password or a token.

- HTTP Basic: username = device id, password = the device's MQTT password, checked
  against the registry's PBKDF2 hash. PBKDF2 costs milliseconds of CPU, so a successful
  check is remembered for a minute by each process (`VerifiedSecrets`).
- A device token: a JWT that `POST /api/v1/devices/{device_id}/token` gives for Basic
  credentials. Its kind is `device`, so a user's access token is never a device token and
  a device token never a user's. It names the fingerprint of the secret hash it was
  issued under, so rotating the credentials ends it.

Every request reads the registry, whichever way the device authenticates: a disabled or
deleted device, or a rotated credential, stops working at once.

Wrong passwords are limited per address and per device (api/auth_limits.py): past a
limit the answer is 429 before PBKDF2 runs. A password that matched within the minute
skips the limits (it is no guess), so a device keeps working while someone guesses
its password; device tokens are not limited (a forged one cannot be guessed).

This module cannot use `api.deps` (the context holds its `VerifiedSecrets`), so it reads
the context and opens connections itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import jwt
import psycopg
from fastapi import Depends, Path, Request
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from fieldline.api.auth_limits import Attempt, client_address
from fieldline.api.errors import ApiError
from fieldline.api.tokens import ALGORITHM, InvalidTokenError
from fieldline.broker.dynsec import fingerprint
from fieldline.domain.devices import DEVICE_ID_PATTERN, DeviceAccess, is_valid_device_id
from fieldline.domain.lockout import CredentialKind
from fieldline.security.passwords import verify_encoded
from fieldline.storage import devices as device_store
from fieldline.storage.errors import NotFoundError

if TYPE_CHECKING:
    from fieldline.api.context import ApiContext

DEVICE_TOKEN_TYPE = "device"
VERIFIED_TTL_SECONDS = 60.0
VERIFIED_MAX_ENTRIES = 10_000
CHALLENGE = 'Basic realm="fieldline devices", Bearer'
# The same answer for an unknown device and a wrong password.
BAD_CREDENTIALS = "invalid device credentials"

_basic = HTTPBasic(
    auto_error=False, description="Username: the device id; password: its MQTT password"
)
_bearer = HTTPBearer(
    auto_error=False, description="A device token from POST /api/v1/devices/{device_id}/token"
)
DevicePath = Annotated[str, Path(pattern=DEVICE_ID_PATTERN.pattern, max_length=128)]


class VerifiedSecrets:
    """Secrets that recently matched their stored hash (a device's password, an API key),
    so PBKDF2 runs about once a minute per account.

    An entry is keyed by the account (device id, API key id), the SHA-256 of the secret
    (the secret itself is not kept) and the fingerprint of the hash it matched: a
    rotated hash misses, so the old secret must pass PBKDF2 again, and fails. Only
    successes are kept, for `ttl` seconds, at most `max_entries` of them (the oldest go
    first). One event loop uses it: no locks.
    """

    __slots__ = ("_clock", "_entries", "_max_entries", "_ttl")

    def __init__(
        self,
        *,
        ttl: float = VERIFIED_TTL_SECONDS,
        max_entries: int = VERIFIED_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        # key -> expiry on `clock`; insertion order is expiry order (a refresh re-inserts)
        self._entries: dict[tuple[str, bytes, str], float] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(account: str, secret: str, secret_hash: str) -> tuple[str, bytes, str]:
        return account, hashlib.sha256(secret.encode()).digest(), fingerprint(secret_hash)

    def contains(self, account: str, secret: str, secret_hash: str) -> bool:
        key = self._key(account, secret, secret_hash)
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires <= self._clock():
            del self._entries[key]
            return False
        return True

    def add(self, account: str, secret: str, secret_hash: str) -> None:
        key = self._key(account, secret, secret_hash)
        self._entries.pop(key, None)
        self._entries[key] = self._clock() + self._ttl
        while len(self._entries) > self._max_entries:
            del self._entries[next(iter(self._entries))]


@dataclass(frozen=True, slots=True)
class DeviceToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class DeviceTokenClaims:
    device_id: str
    secret_fingerprint: str


def issue_device_token(
    *, secret_key: str, device_id: str, secret_hash: str, ttl: timedelta
) -> DeviceToken:
    now = datetime.now(UTC)
    expires_at = now + ttl
    claims = {
        "sub": device_id,
        "typ": DEVICE_TOKEN_TYPE,
        "fp": fingerprint(secret_hash),
        "iat": now,
        "exp": expires_at,
        "jti": uuid.uuid4().hex,
    }
    return DeviceToken(jwt.encode(claims, secret_key, algorithm=ALGORITHM), expires_at)


def verify_device_token(token: str, *, secret_key: str) -> DeviceTokenClaims:
    """The token's claims; InvalidTokenError when expired, forged or not a device token."""
    try:
        claims = jwt.decode(
            token,
            secret_key,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "typ", "exp", "fp"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidTokenError(str(exc)) from exc
    if claims.get("typ") != DEVICE_TOKEN_TYPE:
        raise InvalidTokenError("not a device token")
    device_id, secret_fp = claims["sub"], claims["fp"]
    if not isinstance(device_id, str) or not isinstance(secret_fp, str):
        raise InvalidTokenError("malformed claims")
    return DeviceTokenClaims(device_id=device_id, secret_fingerprint=secret_fp)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": CHALLENGE})


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def _unavailable() -> ApiError:
    return ApiError(
        503, "the database is unavailable; try again later", headers={"Retry-After": "5"}
    )


async def _device_access(context: ApiContext, device_id: str) -> DeviceAccess | None:
    if not is_valid_device_id(device_id):
        return None
    try:
        async with context.pool.connection() as conn:
            return await device_store.device_access(conn, device_id)
    except NotFoundError:
        return None
    except psycopg.OperationalError as exc:
        raise _unavailable() from exc


async def _check_password(
    context: ApiContext, request: Request, device_id: str, password: str
) -> DeviceAccess:
    access = await _device_access(context, device_id)
    cache = context.device_secrets
    if access is None or not cache.contains(device_id, password, access.secret_hash):
        # Not a password that matched a minute ago: a guess, perhaps, so it is limited.
        await _verify(context, request, device_id, password, access)
        assert access is not None  # _verify refuses an unknown device
        cache.add(device_id, password, access.secret_hash)
    if not access.enabled:
        raise _unauthorized(f"device {device_id!r} is disabled")
    return access


async def _verify(
    context: ApiContext,
    request: Request,
    device_id: str,
    password: str,
    access: DeviceAccess | None,
) -> None:
    """Check the password with PBKDF2, unless the address or the device is over its limit
    of failures (429). An unknown device counts as a failure, as a wrong password does,
    but an id that cannot be a device is refused uncounted (it names no account)."""
    if not is_valid_device_id(device_id):
        raise _unauthorized(BAD_CREDENTIALS)
    limits = context.auth_limits
    attempt = Attempt(CredentialKind.DEVICE, device_id, client_address(request))
    try:
        async with context.pool.connection() as conn:
            record = await limits.check(conn, attempt)
        # The connection goes back to the pool before the slow check.
        valid = access is not None and await asyncio.to_thread(
            verify_encoded, access.secret_hash, password
        )
        if valid:
            if record is not None:  # no connection taken when there is nothing to forget
                async with context.pool.connection() as conn:
                    await limits.succeeded(conn, attempt, record)
            return
        async with context.pool.connection() as conn:
            await limits.failed(conn, attempt)
    except psycopg.OperationalError as exc:
        raise _unavailable() from exc
    raise _unauthorized(BAD_CREDENTIALS)


async def _check_token(context: ApiContext, token: str) -> DeviceAccess:
    try:
        claims = verify_device_token(token, secret_key=context.secret_key)
    except InvalidTokenError as exc:
        raise _unauthorized(f"invalid device token: {exc}") from exc
    access = await _device_access(context, claims.device_id)
    if access is None:
        raise _unauthorized("the token's device no longer exists")
    if fingerprint(access.secret_hash) != claims.secret_fingerprint:
        raise _unauthorized("the device's credentials were rotated since; get a new token")
    if not access.enabled:
        raise _unauthorized(f"device {claims.device_id!r} is disabled")
    return access


def _for_path(access: DeviceAccess, device_id: str) -> DeviceAccess:
    if access.device_id != device_id:
        raise ApiError(
            403, f"authenticated as device {access.device_id!r}, which is not {device_id!r}"
        )
    return access


async def basic_device(
    request: Request,
    device_id: DevicePath,
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> DeviceAccess:
    """The device of the path, proven by its password (HTTP Basic) only."""
    if basic is None:
        raise _unauthorized("HTTP Basic authentication required: device id and MQTT password")
    return _for_path(
        await _check_password(_context(request), request, basic.username, basic.password),
        device_id,
    )


async def any_device(
    request: Request,
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> DeviceAccess:
    """Whichever device the credentials prove (paths that name no device: firmware)."""
    context = _context(request)
    if basic is not None:
        return await _check_password(context, request, basic.username, basic.password)
    if bearer is not None:
        return await _check_token(context, bearer.credentials)
    raise _unauthorized(
        "authentication required: HTTP Basic (device id and MQTT password) or a device token"
    )


async def authenticated_device(
    device_id: DevicePath, access: Annotated[DeviceAccess, Depends(any_device)]
) -> DeviceAccess:
    """The device of the path, proven by its password (HTTP Basic) or a device token."""
    return _for_path(access, device_id)


BasicDevice = Annotated[DeviceAccess, Depends(basic_device)]
AuthenticatedDevice = Annotated[DeviceAccess, Depends(authenticated_device)]
AnyDevice = Annotated[DeviceAccess, Depends(any_device)]
