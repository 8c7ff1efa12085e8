"""Request dependencies: the database connection, the caller, and role checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection

from fieldline.api.auth_limits import Attempt, client_address
from fieldline.api.context import ApiContext
from fieldline.api.errors import ApiError
from fieldline.api.tokens import (
    InvalidTokenError,
    TokenClaims,
    TokenIssuer,
    TokenKind,
    split_api_key,
)
from fieldline.domain.lockout import CredentialKind
from fieldline.domain.users import Role, User
from fieldline.security.passwords import verify_encoded
from fieldline.storage import users as user_store
from fieldline.storage.db import Row
from fieldline.storage.errors import NotFoundError

bearer_scheme = HTTPBearer(auto_error=False, description="Access token from /api/v1/auth/login")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
ApiKeyHeader = Annotated[str | None, Depends(api_key_scheme)]


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]


async def get_connection(context: Context) -> AsyncIterator[AsyncConnection[Row]]:
    async with context.pool.connection() as conn:
        yield conn


DbConn = Annotated[AsyncConnection[Row], Depends(get_connection)]


def get_issuer(context: Context) -> TokenIssuer:
    settings = context.settings
    return TokenIssuer(
        secret_key=context.secret_key,
        access_ttl=timedelta(minutes=settings.access_token_minutes),
        refresh_ttl=timedelta(days=settings.refresh_token_days),
    )


Issuer = Annotated[TokenIssuer, Depends(get_issuer)]


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request, and with what: an access token or an API key."""

    user: User
    token: TokenClaims | None  # None for an API key
    api_key_id: str | None  # None for a token

    @property
    def expires_at(self) -> datetime | None:
        return self.token.expires_at if self.token is not None else None


async def user_of_token(conn: AsyncConnection[Row], claims: TokenClaims) -> User:
    """The token's user, unless the token was revoked since it was issued."""
    try:
        user, signed_out = await user_store.token_holder(conn, claims.user_id, claims.session_id)
    except NotFoundError as exc:
        raise _unauthorized("the token's user no longer exists") from exc
    if signed_out:
        raise _unauthorized("this session was signed out; sign in again")
    if user.token_version != claims.version:
        raise _unauthorized(
            "this token was revoked (the password or role changed, or every session was"
            " signed out); sign in again"
        )
    return user


async def authenticate(
    conn: AsyncConnection[Row],
    request: Request,
    issuer: TokenIssuer,
    bearer: HTTPAuthorizationCredentials | None,
    api_key: str | None,
) -> Caller:
    if api_key is not None:
        user, key_id = await _user_from_api_key(conn, request, api_key)
        return Caller(user, None, key_id)
    if bearer is None:
        raise _unauthorized("authentication required: a bearer token or an X-API-Key header")
    try:
        claims = issuer.verify(bearer.credentials, TokenKind.ACCESS)
    except InvalidTokenError as exc:
        raise _unauthorized(f"invalid access token: {exc}") from exc
    return Caller(await user_of_token(conn, claims), claims, None)


async def get_caller(
    request: Request,
    conn: DbConn,
    issuer: Issuer,
    bearer: Bearer,
    api_key: ApiKeyHeader,
) -> Caller:
    return await authenticate(conn, request, issuer, bearer, api_key)


CurrentCaller = Annotated[Caller, Depends(get_caller)]


async def get_current_user(caller: CurrentCaller) -> User:
    return caller.user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def _user_from_api_key(
    conn: AsyncConnection[Row], request: Request, key: str
) -> tuple[User, str]:
    parts = split_api_key(key)
    if parts is None:
        raise _unauthorized("invalid API key")  # malformed: nothing to guess, nothing counted
    key_id, secret = parts
    context = get_context(request)
    found = await user_store.api_key_secret(conn, key_id)  # read each time: revocation is at once
    known = context.api_key_secrets
    if found is None or not known.contains(key_id, secret, found[1]):
        # Not a key that matched a minute ago: a guess, perhaps, so it is limited.
        limits = context.auth_limits
        attempt = Attempt(CredentialKind.API_KEY, key_id, client_address(request))
        record = await limits.check(conn, attempt)
        if found is None or not await asyncio.to_thread(verify_encoded, found[1], secret):
            await limits.failed(conn, attempt)
            raise _unauthorized("invalid API key")
        await limits.succeeded(conn, attempt, record)
        known.add(key_id, secret, found[1])
    await user_store.touch_api_key(conn, key_id)
    # The key's user as it is now: its role today, and gone with the user (keys cascade).
    return await user_store.get_user(conn, found[0].user_id), key_id


def _check_role(user: User, role: Role) -> None:
    if not user.role.includes(role):
        raise ApiError(403, f"this needs the {role.value} role; you are {user.role.value}")


class RoleCheck:
    """The dependency of an operation that needs `role` (or a role above it).

    A class rather than a closure so that the role matrix test can read each
    operation's role from its dependencies (tests/api/test_role_matrix.py).
    """

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(self, user: CurrentUser) -> User:
        _check_role(user, self.role)
        return user


def require(role: Role) -> RoleCheck:
    return RoleCheck(role)


Viewer = Annotated[User, Depends(require(Role.VIEWER))]
Operator = Annotated[User, Depends(require(Role.OPERATOR))]
Admin = Annotated[User, Depends(require(Role.ADMIN))]

# How often an open event stream checks that its token or key still holds.
STREAM_RECHECK_SECONDS = 3.0


class StreamCaller:
    """A viewer's event stream: authenticated at open, and checked again every few
    seconds, so a stream ends soon after its token expires or is revoked."""

    def __init__(self, caller: Caller, context: ApiContext) -> None:
        self.caller = caller
        self._context = context
        self._checked_at = time.monotonic()

    @property
    def user(self) -> User:
        return self.caller.user

    async def ended(self) -> str | None:
        """Why the stream must end now; None while its credentials hold."""
        expires_at = self.caller.expires_at
        if expires_at is not None and datetime.now(UTC) >= expires_at:
            return "token expired"
        if time.monotonic() - self._checked_at < STREAM_RECHECK_SECONDS:
            return None
        self._checked_at = time.monotonic()
        try:
            async with self._context.pool.connection() as conn:
                await _recheck(conn, self.caller)
        except ApiError as exc:
            return exc.message
        return None


async def _recheck(conn: AsyncConnection[Row], caller: Caller) -> None:
    """Raise ApiError when the caller's credentials no longer hold or give a viewer."""
    if caller.token is not None:
        user = await user_of_token(conn, caller.token)
    else:
        live = caller.api_key_id is not None and await user_store.api_key_secret(
            conn, caller.api_key_id
        )
        if not live:
            raise _unauthorized("the API key was revoked")
        try:
            user = await user_store.get_user(conn, caller.user.id)
        except NotFoundError as exc:
            raise _unauthorized("the API key's user no longer exists") from exc
    _check_role(user, Role.VIEWER)


async def get_stream_viewer(
    request: Request,
    context: Context,
    issuer: Issuer,
    bearer: Bearer,
    api_key: ApiKeyHeader,
) -> StreamCaller:
    """A viewer, authenticated on a connection given back at once.

    A stream lasts as long as the page that opened it; holding a pooled
    connection for all that time would let a few open pages starve the API.
    """
    async with context.pool.connection() as conn:
        caller = await authenticate(conn, request, issuer, bearer, api_key)
    _check_role(caller.user, Role.VIEWER)
    return StreamCaller(caller, context)


StreamViewer = Annotated[StreamCaller, Depends(get_stream_viewer)]
