"""Signed access and refresh tokens (JWT, HS256) and API key strings."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt

ALGORITHM = "HS256"
API_KEY_PREFIX = "fl_"


class TokenKind(StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"


class InvalidTokenError(Exception):
    """Expired, malformed, of the wrong kind, or not signed by this server."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    kind: TokenKind
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TokenIssuer:
    secret_key: str
    access_ttl: timedelta
    refresh_ttl: timedelta

    def issue(self, user_id: int, kind: TokenKind) -> str:
        now = datetime.now(UTC)
        ttl = self.access_ttl if kind is TokenKind.ACCESS else self.refresh_ttl
        claims = {
            "sub": str(user_id),
            "typ": kind.value,
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secret_key, algorithm=ALGORITHM)

    def verify(self, token: str, kind: TokenKind) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self.secret_key,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "typ", "exp"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(str(exc)) from exc
        if claims.get("typ") != kind.value:
            raise InvalidTokenError(f"not an {kind.value} token")
        try:
            user_id = int(claims["sub"])
        except (TypeError, ValueError) as exc:
            raise InvalidTokenError("malformed subject") from exc
        return TokenClaims(
            user_id=user_id, kind=kind, expires_at=datetime.fromtimestamp(claims["exp"], tz=UTC)
        )


def new_api_key() -> tuple[str, str, str]:
    """Answer (key_id, secret, full key as given to the user once)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(30)
    return key_id, secret, f"{API_KEY_PREFIX}{key_id}.{secret}"


def split_api_key(key: str) -> tuple[str, str] | None:
    if not key.startswith(API_KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(API_KEY_PREFIX) :].partition(".")
    return (key_id, secret) if sep and key_id and secret else None
