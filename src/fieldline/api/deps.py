"""Request dependencies: the database connection, the caller, and role checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection

from fieldline.api.context import ApiContext
from fieldline.api.errors import ApiError
from fieldline.api.tokens import InvalidTokenError, TokenIssuer, TokenKind, split_api_key
from fieldline.domain.users import Role, User
from fieldline.security.passwords import verify_encoded
from fieldline.storage import users as user_store
from fieldline.storage.db import Row
from fieldline.storage.errors import NotFoundError

_bearer = HTTPBearer(auto_error=False, description="Access token from /api/v1/auth/login")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")


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


async def _authenticate(
    conn: AsyncConnection[Row],
    issuer: TokenIssuer,
    bearer: HTTPAuthorizationCredentials | None,
    api_key: str | None,
) -> tuple[User, datetime | None]:
    """The caller, and when its access token expires (None for an API key)."""
    if api_key is not None:
        return await _user_from_api_key(conn, api_key), None
    if bearer is None:
        raise _unauthorized("authentication required: a bearer token or an X-API-Key header")
    try:
        claims = issuer.verify(bearer.credentials, TokenKind.ACCESS)
    except InvalidTokenError as exc:
        raise _unauthorized(f"invalid access token: {exc}") from exc
    try:
        return await user_store.get_user(conn, claims.user_id), claims.expires_at
    except NotFoundError as exc:
        raise _unauthorized("the token's user no longer exists") from exc


async def get_current_user(
    conn: DbConn,
    issuer: Issuer,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> User:
    user, _ = await _authenticate(conn, issuer, bearer, api_key)
    return user


@dataclass(frozen=True, slots=True)
class StreamCaller:
    user: User
    expires_at: datetime | None  # a stream ends when the token it was opened with does


async def get_stream_viewer(
    context: Context,
    issuer: Issuer,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> StreamCaller:
    """A viewer, authenticated on a connection given back at once.

    A stream lasts as long as the page that opened it; holding a pooled
    connection for all that time would let a few open pages starve the API.
    """
    async with context.pool.connection() as conn:
        user, expires_at = await _authenticate(conn, issuer, bearer, api_key)
    _check_role(user, Role.VIEWER)
    return StreamCaller(user, expires_at)


StreamViewer = Annotated[StreamCaller, Depends(get_stream_viewer)]


async def _user_from_api_key(conn: AsyncConnection[Row], key: str) -> User:
    parts = split_api_key(key)
    found = await user_store.api_key_secret(conn, parts[0]) if parts else None
    if parts is None or found is None:
        raise _unauthorized("invalid API key")
    api_key, secret_hash = found
    if not await asyncio.to_thread(verify_encoded, secret_hash, parts[1]):
        raise _unauthorized("invalid API key")
    await user_store.touch_api_key(conn, api_key.key_id)
    return await user_store.get_user(conn, api_key.user_id)


CurrentUser = Annotated[User, Depends(get_current_user)]


def _check_role(user: User, role: Role) -> None:
    if not user.role.includes(role):
        raise ApiError(403, f"this needs the {role.value} role; you are {user.role.value}")


def require(role: Role) -> Callable[[User], Coroutine[Any, Any, User]]:
    async def check(user: CurrentUser) -> User:
        _check_role(user, role)
        return user

    return check


Viewer = Annotated[User, Depends(require(Role.VIEWER))]
Operator = Annotated[User, Depends(require(Role.OPERATOR))]
Admin = Annotated[User, Depends(require(Role.ADMIN))]
