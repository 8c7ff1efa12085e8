"""Login, token refresh and API keys."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from psycopg import AsyncConnection
from pydantic import BaseModel, Field

from fieldline.api.deps import CurrentUser, DbConn, Issuer
from fieldline.api.errors import ApiError
from fieldline.api.tokens import InvalidTokenError, TokenKind, new_api_key
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
from fieldline.storage.errors import NotFoundError

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])

# Verified when the username is unknown, so both paths cost the same time.
_DUMMY_HASH = hash_secret("fieldline-timing-equaliser", iterations=USER_ITERATIONS).encode()


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


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
        return cls(
            key_id=key.key_id,
            name=key.name,
            user_id=key.user_id,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
        )


class ApiKeyCreated(ApiKeyOut):
    api_key: str = Field(description="Shown once; send it as the X-API-Key header.")


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]
    next_cursor: str | None = None


@router.post("/login", response_model=TokenPair)
async def login(body: LoginRequest, conn: DbConn, issuer: Issuer) -> TokenPair:
    found = await user_store.credentials_of(conn, body.username)
    stored = found[1] if found else _DUMMY_HASH
    valid = await asyncio.to_thread(verify_encoded, stored, body.password)
    if found is None or not valid:
        raise ApiError(401, "wrong username or password")
    user = found[0]
    return TokenPair(
        access_token=issuer.issue(user.id, TokenKind.ACCESS),
        refresh_token=issuer.issue(user.id, TokenKind.REFRESH),
    )


@router.post("/refresh", response_model=AccessToken)
async def refresh(body: RefreshRequest, conn: DbConn, issuer: Issuer) -> AccessToken:
    try:
        claims = issuer.verify(body.refresh_token, TokenKind.REFRESH)
        user = await user_store.get_user(conn, claims.user_id)
    except (InvalidTokenError, NotFoundError) as exc:
        raise ApiError(401, f"invalid refresh token: {exc}") from exc
    return AccessToken(access_token=issuer.issue(user.id, TokenKind.ACCESS))


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
