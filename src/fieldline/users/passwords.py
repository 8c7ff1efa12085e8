"""The one password policy for users, whichever door creates or changes them.

The API's request models use these lengths (so the OpenAPI document states them);
the CLI and the use-cases check them with `check_password`.
"""

from __future__ import annotations

import asyncio

from fieldline.security.passwords import USER_ITERATIONS, hash_secret

MIN_PASSWORD_LENGTH = 10
# PBKDF2 hashes whatever length it is given; a bound keeps one request's work bounded.
MAX_PASSWORD_LENGTH = 1024


class WeakPasswordError(ValueError):
    """A password outside the policy; the message says what it must be."""


def check_password(password: str) -> None:
    """Raise `WeakPasswordError` unless `password` meets the policy."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPasswordError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters")


async def hash_password(password: str) -> str:
    """The encoded slow salted hash users are stored with (off the event loop: ~0.2 s)."""
    return (await asyncio.to_thread(hash_secret, password, iterations=USER_ITERATIONS)).encode()
