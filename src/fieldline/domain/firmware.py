"""Firmware manifests, their Ed25519 signatures, versions and rollout places (SPEC §5).
Pure: no I/O, no clock reads.

The signed message is the manifest `fieldline-fw-v1\\n{model}\\n{version}\\n{sha256}\\n{size}`:
it binds all four, so a signature made for one image cannot be replayed onto another
image, another model or another version. Keys are named by the first 16 hex digits of
the sha256 of their 32 raw public bytes, so a device can tell which of the keys it
trusts made a signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

MANIFEST_HEADER = "fieldline-fw-v1"
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
PLACES = 1_000_000  # a device's place in a rollout: 0 .. PLACES-1


PROGRESS_STATES = ("downloading", "downloaded", "installing", "installed", "failed")


@dataclass(frozen=True, slots=True)
class Progress:
    """A device's report on `devices/{id}/ota/progress` (SPEC §2)."""

    rollout_id: int
    version: str
    state: str
    progress: int | None
    error: str | None


class SignatureError(ValueError):
    """A signature or key that is malformed, or a signature no trusted key made."""


@dataclass(frozen=True, slots=True)
class Image:
    """What a manifest binds."""

    device_model: str
    version: str
    sha256: str  # hex, lower case
    size_bytes: int

    def manifest(self) -> bytes:
        return (
            f"{MANIFEST_HEADER}\n{self.device_model}\n{self.version}\n"
            f"{self.sha256}\n{self.size_bytes}"
        ).encode()


@dataclass(frozen=True, slots=True)
class TrustedKey:
    key_id: str
    public_key: Ed25519PublicKey

    @classmethod
    def of(cls, public_key: Ed25519PublicKey) -> TrustedKey:
        return cls(key_id_of(public_key), public_key)

    def public_base64(self) -> str:
        return base64.b64encode(raw_public(self.public_key)).decode()


def raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(public_key)).hexdigest()[:16]


def public_key_from_base64(text: str) -> Ed25519PublicKey:
    """A public key as `GET /api/v1/firmware/keys` publishes it (base64 of 32 bytes)."""
    raw = _b64(text, "public key")
    if len(raw) != PUBLIC_KEY_BYTES:
        raise SignatureError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def private_key_from_pem(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the signing key is not an Ed25519 key")
    return key


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def sign(key: Ed25519PrivateKey, image: Image) -> str:
    """The standard base64 of the 64-byte signature of `image`'s manifest."""
    return base64.b64encode(key.sign(image.manifest())).decode()


def verifying_key(signature: str, image: Image, trusted: list[TrustedKey]) -> TrustedKey:
    """The trusted key that made `signature` for `image`; SignatureError when none did."""
    raw = _b64(signature, "signature")
    if len(raw) != SIGNATURE_BYTES:
        raise SignatureError(f"an Ed25519 signature is {SIGNATURE_BYTES} bytes, not {len(raw)}")
    manifest = image.manifest()
    for key in trusted:
        try:
            key.public_key.verify(raw, manifest)
        except InvalidSignature:
            continue
        return key
    raise SignatureError(
        "the signature does not verify against any trusted key for this model, version, "
        "sha256 and size"
    )


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"the {what} is not standard base64") from exc


_PART = re.compile(r"\d+|[A-Za-z]+")


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """An order for versions as firmware names them (`v1.10.2` after `v1.9`, `1.4.0-rc1`
    before `1.4.0`): numbers compare as numbers, a leading `v` is ignored, and a
    pre-release (letters after the numbers) comes before its release."""
    text = version[1:] if version[:1] in "vV" and version[1:2].isdigit() else version
    # A number is (1, n), letters (0, s) and the end (1, -1): letters sort before the end
    # ("1.4.0-rc1" < "1.4.0") and the end before any number ("1.4" < "1.4.1").
    parts: list[tuple[int, int | str]] = [
        (1, int(part)) if part.isdigit() else (0, part.lower()) for part in _PART.findall(text)
    ]
    parts.append((1, -1))
    return tuple(parts)


def is_downgrade(current: str | None, target: str) -> bool:
    """True when `target` is older than the firmware the device reports."""
    return current is not None and version_key(target) < version_key(current)


def place(rollout_id: int, device_id: str) -> int:
    """The device's fixed place in the rollout's order, 0 .. PLACES-1.

    A stage takes the devices whose place is below its share, so the devices in at
    10% are all in at 50%: eligibility only grows as the percentage does.
    """
    digest = hashlib.sha256(f"{rollout_id}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % PLACES


def places_for_percentage(percentage: float) -> int:
    """The places below this share of the order (100% takes every place)."""
    return round(PLACES * min(max(percentage, 0.0), 100.0) / 100.0)
