"""Sign-in, token refresh, sign-out, changing one's own password, and API keys."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from psycopg import AsyncConnection
from pydantic import BaseModel, Field

from fieldline.api.auth_limits import Attempt, client_address
from fieldline.api.deps import (
    ApiKeyHeader,
    Bearer,
    CurrentCaller,
    CurrentUser,
    DbConn,
    Issuer,
    authenticate,
    get_context,
    user_of_token,
)
from fieldline.api.errors import ApiError
from fieldline.api.routes.users import NewPassword
from fieldline.api.tokens import (
    InvalidTokenError,
    TokenClaims,
    TokenIssuer,
    TokenKind,
    new_api_key,
)
from fieldline.domain.lockout import CredentialKind
from fieldline.domain.users import ApiKey, Role, User
from fieldline.security.passwords import (
    API_KEY_ITERATIONS,
    USER_ITERATIONS,
    hash_secret,
    verify_encoded,
)
from fieldline.storage import audit as audit_store
from fieldline.storage import users as user_store
from fieldline.storage.db import Row
from fieldline.users import MAX_PASSWORD_LENGTH, change_own_password, record_user_change

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@functools.cache
def _dummy_hash() -> str:
    """Verified when the username is unknown, so both paths cost the same time."""
    return hash_secret("fieldline-timing-equaliser", iterations=USER_ITERATIONS).encode()


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=4096)


class AccessToken(BaseModel):
    access_token: str
    token_type: str = "bearer"


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)


class ApiKeyOut(BaseModel):
    key_id: str
    name: str
    user_id: int
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls.model_validate(key, from_attributes=True)


class ApiKeyCreated(ApiKeyOut):
    api_key: str = Field(description="Shown once; send it as the X-API-Key header.")


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]
    next_cursor: str | None = None


_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "too many failed attempts from this address or for this account; "
        "see Retry-After"
    }
}


async def _check_password(
    conn: AsyncConnection[Row], request: Request, username: str, password: str
) -> User | None:
    """The user, when `password` is theirs; None otherwise. Failures are limited: past a
    limit this raises 429 before any hash is computed."""
    limits = get_context(request).auth_limits
    attempt = Attempt(CredentialKind.USER, username, client_address(request))
    record = await limits.check(conn, attempt)
    found = await user_store.credentials_of(conn, username)
    stored = found[1] if found else await asyncio.to_thread(_dummy_hash)
    valid = await asyncio.to_thread(verify_encoded, stored, password)
    if found is None or not valid:
        await limits.failed(conn, attempt)
        return None
    await limits.succeeded(conn, attempt, record)
    return found[0]


def _session(issuer: TokenIssuer, user: User) -> TokenPair:
    access, refresh = issuer.open_session(user_id=user.id, version=user.token_version)
    return TokenPair(access_token=access, refresh_token=refresh)


@router.post(
    "/login",
    response_model=TokenPair,
    responses={401: {"description": "wrong username or password"}, **_LIMITED},
)
async def login(body: LoginRequest, request: Request, conn: DbConn, issuer: Issuer) -> TokenPair:
    """A new session: an access token and the refresh token that renews it."""
    user = await _check_password(conn, request, body.username, body.password)
    if user is None:
        raise ApiError(401, "wrong username or password")
    return _session(issuer, user)


@router.post(
    "/refresh",
    response_model=AccessToken,
    responses={401: {"description": "the refresh token is invalid, expired or signed out"}},
)
async def refresh(body: RefreshRequest, conn: DbConn, issuer: Issuer) -> AccessToken:
    """A new access token of the same session, while the session holds."""
    try:
        claims = issuer.verify(body.refresh_token, TokenKind.REFRESH)
    except InvalidTokenError as exc:
        raise ApiError(401, f"invalid refresh token: {exc}") from exc
    user = await user_of_token(conn, claims)
    return AccessToken(
        access_token=issuer.issue(
            TokenKind.ACCESS,
            user_id=user.id,
            version=user.token_version,
            session_id=claims.session_id,
        )
    )


class LogoutRequest(BaseModel):
    refresh_token: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="The session to end; without it, the access token's session.",
    )
    everywhere: bool = Field(
        False, description="End every session of the user (all devices), not only this one."
    )


@dataclass(frozen=True, slots=True)
class SignOut:
    user: User
    session: TokenClaims | None  # None: signed in with an API key, which has no session
    everywhere: bool


async def sign_out_request(
    request: Request,
    conn: DbConn,
    issuer: Issuer,
    bearer: Bearer,
    api_key: ApiKeyHeader,
    body: LogoutRequest | None = None,
) -> SignOut:
    """Whose session ends: the refresh token's in the body, else the caller's.

    The refresh token alone is enough, so a client whose access token has expired
    can still sign out.
    """
    everywhere = body is not None and body.everywhere
    if body is not None and body.refresh_token is not None:
        try:
            claims = issuer.verify(body.refresh_token, TokenKind.REFRESH)
        except InvalidTokenError as exc:
            raise ApiError(401, f"invalid refresh token: {exc}") from exc
        return SignOut(await user_of_token(conn, claims), claims, everywhere)
    caller = await authenticate(conn, request, issuer, bearer, api_key)
    if caller.token is None and not everywhere:
        raise ApiError(
            400,
            "an API key has no session to sign out: revoke the key"
            " (DELETE /api/v1/api-keys/{key_id}), or send everywhere: true",
        )
    return SignOut(caller.user, caller.token, everywhere)


@router.post(
    "/logout",
    status_code=204,
    responses={
        400: {"description": "an API key has no session: send everywhere, or revoke the key"},
        401: {"description": "no valid access token, API key or refresh token"},
        **_LIMITED,
    },
)
async def logout(
    ending: Annotated[SignOut, Depends(sign_out_request)], conn: DbConn, issuer: Issuer
) -> None:
    """Sign out: the session's refresh token and access tokens stop working at once.

    With `everywhere`, every session of the user ends (their API keys stay)."""
    if ending.everywhere:
        async with conn.transaction():
            await user_store.end_sessions(conn, ending.user.id)
            await record_user_change(conn, ending.user, "user.sign_out_everywhere", ending.user, {})
    elif ending.session is not None:
        # Remembered until the session's refresh token would have expired anyway: no
        # refresh token issued with it lives longer than the refresh lifetime from now.
        await user_store.revoke_session(
            conn,
            ending.session.session_id,
            expires_at=datetime.now(UTC) + issuer.refresh_ttl,
        )


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    new_password: NewPassword


@router.post(
    "/password",
    response_model=TokenPair,
    responses={403: {"description": "the current password is wrong"}, **_LIMITED},
)
async def change_password(
    body: PasswordChange, caller: CurrentCaller, request: Request, conn: DbConn, issuer: Issuer
) -> TokenPair:
    """Change your own password. Every session of yours ends (on every device); the
    answer is a new session's tokens. Your API keys keep working."""
    user = await _check_password(conn, request, caller.user.username, body.current_password)
    if user is None:
        # Not 401: the caller is signed in, and a client would take 401 as a lost session.
        raise ApiError(403, "the current password is wrong", code="wrong_password")
    user = await change_own_password(conn, user=user, new_password=body.new_password)
    return _session(issuer, user)


class Me(BaseModel):
    id: int
    username: str
    role: Role


@router.get("/me", response_model=Me)
async def who_am_i(user: CurrentUser) -> Me:
    """The signed-in user and role (what the dashboard offers depends on it)."""
    return Me(id=user.id, username=user.username, role=user.role)


keys_router = APIRouter(prefix="/api/v1/api-keys", tags=["auth"])


@keys_router.post("", status_code=201, response_model=ApiKeyCreated)
async def create_api_key(body: ApiKeyCreate, user: CurrentUser, conn: DbConn) -> ApiKeyCreated:
    """A key acting as you, with your role. The secret is shown only in this answer."""
    key_id, secret, full = new_api_key()
    hashed = await asyncio.to_thread(hash_secret, secret, iterations=API_KEY_ITERATIONS)
    secret_hash = hashed.encode()
    async with conn.transaction():
        key = await user_store.create_api_key(
            conn, key_id=key_id, user_id=user.id, name=body.name, secret_hash=secret_hash
        )
        await _audit_key(conn, user, "api_key.create", key_id, {"name": body.name})
    return ApiKeyCreated(**ApiKeyOut.of(key).model_dump(), api_key=full)


async def _audit_key(
    conn: AsyncConnection[Row], user: User, action: str, key_id: str, detail: dict[str, Any]
) -> None:
    await audit_store.record(
        conn,
        actor=audit_store.user_actor(user.username),
        action=action,
        target_type="api_key",
        target_id=key_id,
        detail=detail,
    )


@keys_router.get("", response_model=ApiKeyList)
async def list_api_keys(user: CurrentUser, conn: DbConn) -> ApiKeyList:
    """Your keys; an admin sees everyone's."""
    keys = await user_store.list_api_keys(
        conn, user_id=None if user.role is Role.ADMIN else user.id
    )
    return ApiKeyList(items=[ApiKeyOut.of(k) for k in keys if k.revoked_at is None])


@keys_router.delete("/{key_id}", status_code=204)
async def revoke_api_key(
    key_id: Annotated[str, Path(max_length=64)], user: CurrentUser, conn: DbConn
) -> None:
    async with conn.transaction():
        await user_store.revoke_api_key(
            conn, key_id, user_id=None if user.role is Role.ADMIN else user.id
        )
        await _audit_key(conn, user, "api_key.revoke", key_id, {})
