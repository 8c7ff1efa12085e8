"""The firmware keys of this deployment: the platform's own signing key and the keys it trusts.

The private key is read (or generated, once, into the data directory) only by the API
process that signs an upload: the worker and ingest never see it. Trusted public keys
come from settings, so rotating one is a configuration change, published to devices
by `GET /api/v1/firmware/keys`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldline.config import Settings
from fieldline.domain.firmware import (
    Image,
    SignatureError,
    TrustedKey,
    private_key_from_pem,
    private_key_pem,
    public_key_from_base64,
    sign,
    verifying_key,
)
from fieldline.ops.secrets import stored_secret_file

GENERATED_KEY_NAME = "firmware_signing_key.pem"


class KeyConfigurationError(ValueError):
    """The settings name a key that cannot be used."""


@dataclass(frozen=True, slots=True)
class Signed:
    signature: str
    key_id: str


class FirmwareKeys:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @cached_property
    def _signing_key(self) -> Ed25519PrivateKey:
        settings = self._settings
        if settings.firmware_signing_key_file is not None:
            try:
                pem = settings.firmware_signing_key_file.read_bytes()
            except OSError as exc:
                raise KeyConfigurationError(
                    f"FIELDLINE_FIRMWARE_SIGNING_KEY_FILE cannot be read: {exc}"
                ) from exc
        else:
            pem = stored_secret_file(
                settings.data_dir,
                GENERATED_KEY_NAME,
                lambda: private_key_pem(Ed25519PrivateKey.generate()),
            )
        try:
            return private_key_from_pem(pem)
        except SignatureError as exc:
            raise KeyConfigurationError(f"the firmware signing key: {exc}") from exc

    @cached_property
    def own(self) -> TrustedKey:
        return TrustedKey.of(self._signing_key.public_key())

    @cached_property
    def trusted(self) -> list[TrustedKey]:
        """The platform's own key first, then the configured ones, each once."""
        keys = [self.own]
        for text in self._settings.firmware_trusted_keys.split(","):
            if not text.strip():
                continue
            try:
                key = TrustedKey.of(public_key_from_base64(text))
            except SignatureError as exc:
                raise KeyConfigurationError(f"FIELDLINE_FIRMWARE_TRUSTED_KEYS: {exc}") from exc
            if key.key_id not in {k.key_id for k in keys}:
                keys.append(key)
        return keys

    @cached_property
    def active_key_id(self) -> str:
        wanted = self._settings.firmware_active_key
        if wanted is None:
            return self.own.key_id
        if wanted not in {key.key_id for key in self.trusted}:
            raise KeyConfigurationError(
                f"FIELDLINE_FIRMWARE_ACTIVE_KEY {wanted!r} is none of the trusted keys' ids"
            )
        return wanted

    def check(self) -> None:
        """Refuse a configuration that cannot work (at start, not at the first upload)."""
        _ = self.trusted, self.active_key_id

    def sign(self, image: Image) -> Signed:
        """The platform's signature; KeyConfigurationError when the active key is offline."""
        if self.active_key_id != self.own.key_id:
            raise KeyConfigurationError(
                f"the active key {self.active_key_id} signs offline: upload with its `signature`"
            )
        return Signed(sign(self._signing_key, image), self.own.key_id)

    def verify(self, signature: str, image: Image) -> Signed:
        """The supplied signature, if a trusted key made it; SignatureError otherwise."""
        key = verifying_key(signature, image, self.trusted)
        return Signed(signature.strip(), key.key_id)
