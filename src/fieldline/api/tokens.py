"""Signed access and refresh tokens (JWT, HS256) and API key strings.

A login opens a session: a refresh token and the access tokens it renews share its id
(`sid`), so a sign-out ends all of them at once. Every token also names the user's
token version (`ver`) when it was issued; raising the version (a password or role
change, "sign out everywhere") ends every token issued before. Both are checked on
each request against the user's row, which the request reads anyway.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt

ALGORITHM = "HS256"
API_KEY_PREFIX = "fl_"
API_KEY_ID_MAX_LENGTH = 64


class TokenKind(StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"


class InvalidTokenError(Exception):
    """Expired, malformed, of the wrong kind, or not signed by this server."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    kind: TokenKind
    version: int
    session_id: str
    expires_at: datetime


def new_session_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class TokenIssuer:
    secret_key: str
    access_ttl: timedelta
    refresh_ttl: timedelta

    def issue(self, kind: TokenKind, *, user_id: int, version: int, session_id: str) -> str:
        now = datetime.now(UTC)
        ttl = self.access_ttl if kind is TokenKind.ACCESS else self.refresh_ttl
        claims = {
            "sub": str(user_id),
            "typ": kind.value,
            "ver": version,
            "sid": session_id,
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secret_key, algorithm=ALGORITHM)

    def open_session(self, *, user_id: int, version: int) -> tuple[str, str]:
        """(access token, refresh token) of a new session, as a login gives them."""
        session_id = new_session_id()
        return (
            self.issue(TokenKind.ACCESS, user_id=user_id, version=version, session_id=session_id),
            self.issue(TokenKind.REFRESH, user_id=user_id, version=version, session_id=session_id),
        )

    def verify(self, token: str, kind: TokenKind) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self.secret_key,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "typ", "exp", "ver", "sid"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(str(exc)) from exc
        if claims.get("typ") != kind.value:
            raise InvalidTokenError(f"not an {kind.value} token")
        try:
            user_id = int(claims["sub"])
        except (TypeError, ValueError) as exc:
            raise InvalidTokenError("malformed subject") from exc
        version, session_id = claims["ver"], claims["sid"]
        if not isinstance(version, int) or not isinstance(session_id, str):
            raise InvalidTokenError("malformed claims")
        return TokenClaims(
            user_id=user_id,
            kind=kind,
            version=version,
            session_id=session_id,
            expires_at=datetime.fromtimestamp(claims["exp"], tz=UTC),
        )


def new_api_key() -> tuple[str, str, str]:
    """Answer (key_id, secret, full key as given to the user once)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(30)
    return key_id, secret, f"{API_KEY_PREFIX}{key_id}.{secret}"


def split_api_key(key: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key; None for anything else."""
    if not key.startswith(API_KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(API_KEY_PREFIX) :].partition(".")
    # Key ids are short (new_api_key); a longer one is refused before it is counted.
    if not (sep and key_id and secret) or len(key_id) > API_KEY_ID_MAX_LENGTH:
        return None
    return key_id, secret
