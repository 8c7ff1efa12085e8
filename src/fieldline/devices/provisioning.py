"""Zero-touch provisioning without HTTP: check a signed request, then create the device
or, when an operator allowed it, give an existing one new credentials.

Two steps, because the door parses the body between them: `authenticate` first, so a
caller learns anything about the body, scope or device only once it has proven it
holds a key (the key id, the signature, the clock, replay, then the key's state), then
`provision`. Refusals are domain errors (`devices.errors`); SPEC §3 gives the statuses.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection

from fieldline.broker.base import Broker
from fieldline.broker.publisher import Publisher
from fieldline.devices.errors import (
    AlreadyProvisionedError,
    KeyUnavailableError,
    OutOfScopeError,
    ProvisioningRefusedError,
)
from fieldline.devices.registry import register_device, rotate_credentials
from fieldline.domain.devices import Device
from fieldline.domain.topics import TopicScheme
from fieldline.security.provisioning import (
    CLOCK_TOLERANCE_SECONDS,
    DEFAULT_KEY_ID,
    SealedSecretError,
    SecretBox,
    canonical_signature,
    is_fresh,
    parse_timestamp,
    signature_matches,
)
from fieldline.storage import audit as audit_store
from fieldline.storage import devices as device_store
from fieldline.storage import provisioning as store
from fieldline.storage.db import Row
from fieldline.storage.errors import AlreadyExistsError, NotFoundError
from fieldline.storage.provisioning import KeyState, ProvisioningKey

log = logging.getLogger(__name__)

Conn = AsyncConnection[Row]

_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_REFUSED_STATE = {
    KeyState.REVOKED: ("key_revoked", "this provisioning key has been revoked"),
    KeyState.EXPIRED: ("key_expired", "this provisioning key has expired"),
    KeyState.EXHAUSTED: (
        "key_exhausted",
        "this provisioning key has provisioned as many devices as it may (max_uses)",
    ),
}


@dataclass(frozen=True, slots=True)
class Signer:
    """The key a request was signed with."""

    key_id: str
    key: ProvisioningKey | None  # None: the default key from settings, unscoped and unlimited

    @property
    def actor(self) -> str:
        return audit_store.provisioning_key_actor(self.key_id)


@dataclass(frozen=True, slots=True)
class Provisioned:
    device_id: str
    password: str  # the device's new MQTT password, only here
    created: bool  # False: an existing device, allowed to, got new credentials


async def authenticate(
    conn: Conn,
    *,
    box: SecretBox,
    default_secret: str | None,
    key_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
) -> Signer:
    """The signer of `body`, or `ProvisioningRefusedError` / `KeyUnavailableError`.

    `default_secret` is the single shared key's secret (key id `default`), if set.
    A valid signature is remembered: the same one is refused if replayed.
    """
    if not key_id or not timestamp or not signature:
        raise ProvisioningRefusedError(
            "missing_signature", "X-Key-Id, X-Timestamp and X-Signature headers are required"
        )
    secret, key = await _secret_of(conn, box, default_secret, key_id)
    if not signature_matches(secret, timestamp, body, signature):
        raise ProvisioningRefusedError(
            "bad_signature",
            'X-Signature is not the hex HMAC-SHA256 of "{X-Timestamp}.{body}" under this key',
        )
    now = time.time()
    signed_at = parse_timestamp(timestamp)
    if signed_at is None or not is_fresh(signed_at, now):
        offset = "" if signed_at is None else f" (it is {signed_at - now:+.0f} s off)"
        raise ProvisioningRefusedError(
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
        raise ProvisioningRefusedError(
            "replayed", "this signature was used before; sign each request anew"
        )
    if key is not None:
        _refuse_state(key, datetime.now(UTC))
    return Signer(key_id, key)


async def _secret_of(
    conn: Conn, box: SecretBox, default_secret: str | None, key_id: str
) -> tuple[str, ProvisioningKey | None]:
    unknown = ProvisioningRefusedError("unknown_key", "X-Key-Id names no provisioning key")
    if key_id == DEFAULT_KEY_ID:
        if default_secret is None:
            raise unknown
        return default_secret, None
    found = await store.get_key(conn, key_id) if _KEY_ID.fullmatch(key_id) else None
    if found is None:
        raise unknown
    key, sealed = found
    try:
        return box.open(sealed, key_id=key_id), key
    except SealedSecretError:
        log.error(
            "provisioning key does not decrypt; was the secret key changed?",
            extra={"key_id": key_id},
        )
        raise KeyUnavailableError(
            "this provisioning key cannot be used on this server; ask its operator"
        ) from None


def _refuse_state(key: ProvisioningKey, now: datetime) -> None:
    state = key.state(now)
    if state is not KeyState.ACTIVE:
        raise ProvisioningRefusedError(*_REFUSED_STATE[state])


async def provision(
    conn: Conn,
    *,
    broker: Broker,
    publisher: Publisher | None,
    topics: TopicScheme,
    hash_iterations: int,
    signer: Signer,
    device_id: str,
    device_type: str | None,
    name: str = "",
    metadata: dict[str, Any] | None = None,
) -> Provisioned:
    """Create the device `signer` asks for, in the key's group and type; or give it new
    credentials if it exists and an operator allowed it (`AlreadyProvisionedError` if not).
    """
    chosen_type = _device_type(signer.key, device_type)
    now = datetime.now(UTC)
    try:
        await device_store.get_device(conn, device_id)
    except NotFoundError:
        async with conn.transaction():
            await _use(conn, signer, now)
            try:
                registered = await register_device(
                    conn,
                    broker=broker,
                    publisher=publisher,
                    topics=topics,
                    hash_iterations=hash_iterations,
                    actor=signer.actor,
                    device_id=device_id,
                    name=name,
                    device_type=chosen_type,
                    group=signer.key.group if signer.key else None,
                    metadata=metadata,
                    action="device.provision",
                )
            except AlreadyExistsError as exc:  # another request created it since we looked
                raise AlreadyProvisionedError(device_id) from exc
        return Provisioned(device_id, registered.password, created=True)
    async with conn.transaction():
        if not await store.take_reprovision_allowance(conn, device_id, now):
            raise AlreadyProvisionedError(device_id)
        device = await device_store.get_device(conn, device_id)
        _check_scope(signer.key, device)
        await _use(conn, signer, now)
        password = await rotate_credentials(
            conn,
            broker=broker,
            hash_iterations=hash_iterations,
            actor=signer.actor,
            device_id=device_id,
            action="device.provision",
            detail={"group": device.group, "device_type": device.device_type, "reprovision": True},
        )
    return Provisioned(device_id, password, created=False)


def _device_type(key: ProvisioningKey | None, asked: str | None) -> str:
    scoped = key.device_type if key else None
    if scoped is None:
        return asked or ""
    if asked and asked != scoped:
        raise OutOfScopeError(f"this key provisions devices of type {scoped!r} only")
    return scoped


def _check_scope(key: ProvisioningKey | None, device: Device) -> None:
    """A scoped key may provision again only devices inside its scope."""
    if key is None:
        return
    if (key.group is not None and device.group != key.group) or (
        key.device_type is not None and device.device_type != key.device_type
    ):
        raise OutOfScopeError("this device is outside this key's group or type")


async def _use(conn: Conn, signer: Signer, now: datetime) -> None:
    """Count the use in the caller's transaction; a key used up meanwhile refuses."""
    if signer.key is None or await store.use_key(conn, signer.key_id, now):
        return
    found = await store.get_key(conn, signer.key_id)
    state = found[0].state(now) if found else KeyState.REVOKED
    raise ProvisioningRefusedError(*_REFUSED_STATE.get(state, _REFUSED_STATE[KeyState.EXHAUSTED]))
