"""Zero-touch provisioning: HMAC request signatures and provisioning-key secrets at rest.

A device signs `"{timestamp}.{raw body}"` with HMAC-SHA256, keyed by the
provisioning secret's text as given to it. The server must know that secret to
check a signature, so it cannot be stored as a one-way hash: it is sealed with
AES-GCM under a key derived (HKDF) from the server's secret key, and bound to
its key id so a sealed secret copied onto another key's row does not open.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_ID_PREFIX = "pk_"
# The key id devices sign with when the secret comes from FIELDLINE_PROVISIONING_SECRET.
DEFAULT_KEY_ID = "default"
CLOCK_TOLERANCE_SECONDS = 300
# A signature can be fresh for at most 2 x the tolerance around its own timestamp; a
# seen signature is remembered this long past its timestamp, the rest is margin for skew
# between the clocks of API processes, the worker and the database.
SIGNATURE_MEMORY = timedelta(minutes=10)
SIGNATURE_HEX_LENGTH = 64

_HKDF_INFO = b"fieldline provisioning keys"
_NONCE_BYTES = 12
_TIMESTAMP = re.compile(r"^-?[0-9]{1,15}$")
_SIGNATURE = re.compile(r"^[0-9A-Fa-f]{64}$")


class SealedSecretError(Exception):
    """A sealed secret does not open: another server secret key, or tampered with."""


def new_key() -> tuple[str, str]:
    """A fresh (key id, secret); the secret is 32 random bytes as 64 hex digits."""
    return f"{KEY_ID_PREFIX}{secrets.token_hex(10)}", secrets.token_hex(32)


def sign(secret: str, timestamp: str | int, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of `"{timestamp}.{body}"`, keyed by the secret's UTF-8 text."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def canonical_signature(presented: str) -> str | None:
    """The presented signature as lowercase hex, or None when it is not 64 hex digits."""
    return presented.lower() if _SIGNATURE.fullmatch(presented) else None


def signature_matches(secret: str, timestamp: str, body: bytes, presented: str) -> bool:
    """Constant-time check of `presented` (hex, any case) against the expected signature.

    `timestamp` is the X-Timestamp header text exactly as received: that is what
    the device signed.
    """
    canonical = canonical_signature(presented)
    expected = sign(secret, timestamp, body)
    return canonical is not None and hmac.compare_digest(canonical, expected)


def parse_timestamp(value: str) -> int | None:
    """Whole epoch seconds from the X-Timestamp header, or None when it is not that."""
    return int(value) if _TIMESTAMP.fullmatch(value) else None


def is_fresh(timestamp: int, now: float, tolerance: float = CLOCK_TOLERANCE_SECONDS) -> bool:
    return abs(timestamp - now) <= tolerance


@dataclass(frozen=True, slots=True)
class SecretBox:
    """Seals provisioning secrets for the database with AES-256-GCM.

    Every API process of one installation must share the server secret key
    (FIELDLINE_SECRET_KEY, as for access tokens); changing it leaves existing
    provisioning keys unusable.
    """

    cipher: AESGCM

    @classmethod
    def from_secret_key(cls, secret_key: str) -> SecretBox:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
            secret_key.encode()
        )
        return cls(AESGCM(derived))

    def seal(self, secret: str, *, key_id: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self.cipher.encrypt(nonce, secret.encode(), key_id.encode())

    def open(self, sealed: bytes, *, key_id: str) -> str:
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return self.cipher.decrypt(nonce, ciphertext, key_id.encode()).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError) as exc:
            raise SealedSecretError(
                f"the secret of provisioning key {key_id} does not open"
            ) from exc
