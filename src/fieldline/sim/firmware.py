"""What device firmware checks before it installs an image (docs/ota.md): pure, no I/O.

A device trusts nothing on the way: not the broker that told it of the update, nor
the server that sent the bytes. It installs only an image whose sha256 and size are
those of the metadata and whose manifest carries a signature by a published key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fieldline.domain.firmware import Image, SignatureError, key_id_of, public_key_from_base64

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class OfferError(ValueError):
    """Metadata a device cannot act on (a field missing or of the wrong kind)."""


@dataclass(frozen=True, slots=True)
class FirmwareOffer:
    """The metadata of `devices/{id}/ota` or `GET /firmware/{model}/{version}`."""

    device_model: str
    version: str
    binary_url: str
    sha256: str
    signature: str
    key_id: str
    size_bytes: int
    rollout_id: int | None = None
    allow_downgrade: bool = False

    def image(self) -> Image:
        return Image(self.device_model, self.version, self.sha256, self.size_bytes)

    @classmethod
    def from_json(cls, body: Mapping[str, object]) -> FirmwareOffer:
        text = {}
        for name in ("device_model", "version", "binary_url", "sha256", "signature", "key_id"):
            value = body.get(name)
            if not isinstance(value, str) or not value:
                raise OfferError(f"`{name}` missing or not text")
            text[name] = value
        size = body.get("size_bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise OfferError("`size_bytes` missing or not a whole number")
        rollout_id = body.get("rollout_id")
        if rollout_id is not None and (
            not isinstance(rollout_id, int) or isinstance(rollout_id, bool)
        ):
            raise OfferError("`rollout_id` is not a whole number")
        return cls(
            **text,
            size_bytes=size,
            rollout_id=rollout_id,
            allow_downgrade=body.get("allow_downgrade") is True,
        )


@dataclass(frozen=True, slots=True)
class Keyring:
    """The public keys of `GET /api/v1/firmware/keys`, by key id."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def from_json(cls, body: object) -> Keyring:
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise OfferError("the key list has no `items`")
        keys: dict[str, Ed25519PublicKey] = {}
        for item in items:
            encoded = item.get("public_key") if isinstance(item, dict) else None
            if not isinstance(encoded, str):
                raise OfferError("a key has no `public_key`")
            try:
                key = public_key_from_base64(encoded)
            except SignatureError as exc:
                raise OfferError(str(exc)) from exc
            # The id is computed, not taken from the list: it is what signatures name.
            keys[key_id_of(key)] = key
        return cls(keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self.keys


def verify_image(offer: FirmwareOffer, image: bytes, keyring: Keyring) -> str | None:
    """Why the image must not be installed, or None when it may.

    The digest is checked before the signature: a signature over the manifest proves
    only that the metadata is genuine, the digest that these bytes are what it names.
    """
    if len(image) != offer.size_bytes:
        return f"size mismatch: {len(image)} bytes, expected {offer.size_bytes}"
    if not _SHA256_HEX.fullmatch(offer.sha256) or hashlib.sha256(image).hexdigest() != offer.sha256:
        return "sha256 mismatch"
    key = keyring.keys.get(offer.key_id)
    if key is None:
        return f"unknown signing key {offer.key_id}"
    try:
        signature = base64.b64decode(offer.signature, validate=True)
        key.verify(signature, offer.image().manifest())
    except (binascii.Error, InvalidSignature):
        return "bad signature"
    return None
