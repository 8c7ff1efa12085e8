"""Salted, slow password hashing shared by users, devices and API keys.

PBKDF2-HMAC-SHA512 is used because Mosquitto's dynamic-security plugin and
EMQX both verify exactly this construction, so one stored hash serves the
registry, the broker's credential file and fieldline's own HTTP checks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

ALGORITHM = "pbkdf2_sha512"
DIGEST_BYTES = 64
SALT_BYTES = 12
USER_ITERATIONS = 210_000
# API keys, like device secrets, are long random strings: a lower cost is enough.
API_KEY_ITERATIONS = 10_000


class InvalidHashError(ValueError):
    """A stored hash string is not in the expected format."""


@dataclass(frozen=True, slots=True)
class SecretHash:
    salt: bytes
    iterations: int
    digest: bytes

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        return f"{ALGORITHM}${self.iterations}${salt}${digest}"

    @classmethod
    def decode(cls, encoded: str) -> SecretHash:
        parts = encoded.split("$")
        if len(parts) != 4 or parts[0] != ALGORITHM:
            raise InvalidHashError("not a pbkdf2_sha512 hash")
        try:
            return cls(
                salt=base64.b64decode(parts[2], validate=True),
                iterations=int(parts[1]),
                digest=base64.b64decode(parts[3], validate=True),
            )
        except ValueError as exc:
            raise InvalidHashError("malformed pbkdf2_sha512 hash") from exc

    def verify(self, password: str) -> bool:
        candidate = _derive(password, self.salt, self.iterations)
        return hmac.compare_digest(candidate, self.digest)


def _derive(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, DIGEST_BYTES)


def hash_secret(password: str, *, iterations: int) -> SecretHash:
    salt = secrets.token_bytes(SALT_BYTES)
    return SecretHash(salt=salt, iterations=iterations, digest=_derive(password, salt, iterations))


def verify_encoded(encoded: str, password: str) -> bool:
    """Check a password against a stored hash; a malformed hash never matches."""
    try:
        return SecretHash.decode(encoded).verify(password)
    except InvalidHashError:
        return False


def generate_secret(nbytes: int = 24) -> str:
    """A random secret safe to put in a URL, a header or an MQTT password."""
    return secrets.token_urlsafe(nbytes)
