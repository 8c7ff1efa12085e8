"""Users and roles (admin only)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter
from psycopg import AsyncConnection
from pydantic import BaseModel, Field

from fieldline.api.deps import Admin, DbConn
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.domain.users import Role, User
from fieldline.security.passwords import USER_ITERATIONS, hash_secret
from fieldline.storage import audit as audit_store
from fieldline.storage import users as user_store
from fieldline.storage.db import Row

router = APIRouter(prefix="/api/v1/users", tags=["users"])

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
# Every password a user is given or chooses meets this (creation, an admin's change,
# the user's own change).
NewPassword = Annotated[str, Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)]


class UserOut(BaseModel):
    id: int
    username: str
    role: Role
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(id=user.id, username=user.username, role=user.role, created_at=user.created_at)


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: NewPassword
    role: Role


class UserPatch(BaseModel):
    password: NewPassword | None = Field(
        None, description="A new password; the user's sessions end (tokens stop working)."
    )
    role: Role | None = Field(None, description="A new role; the user's sessions end.")


class UserList(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


async def hash_password(password: str) -> str:
    return (await asyncio.to_thread(hash_secret, password, iterations=USER_ITERATIONS)).encode()


@router.get("", response_model=UserList)
async def list_users(_: Admin, conn: DbConn, limit: Limit = 100, cursor: Cursor = None) -> UserList:
    page = await user_store.list_users(conn, limit=limit, cursor=cursor)
    return UserList(items=[UserOut.of(u) for u in page.items], next_cursor=page.next_cursor)


@router.post(
    "",
    status_code=201,
    response_model=UserOut,
    responses={409: {"description": "a user of that name exists"}},
)
async def create_user(body: UserCreate, admin: Admin, conn: DbConn) -> UserOut:
    password_hash = await hash_password(body.password)
    async with conn.transaction():
        user = await user_store.create_user(
            conn, username=body.username, password_hash=password_hash, role=body.role
        )
        await audit_user_change(conn, admin, "user.create", user, {"role": user.role.value})
    return UserOut.of(user)


async def audit_user_change(
    conn: AsyncConnection[Row], actor: User, action: str, user: User, detail: dict[str, Any]
) -> None:
    """An audit entry: `actor` did `action` to `user`."""
    await audit_store.record(
        conn,
        actor=audit_store.user_actor(actor.username),
        action=action,
        target_type="user",
        target_id=user.username,
        detail=detail,
    )


@router.get("/{user_id}", response_model=UserOut)
async def get_user(user_id: int, _: Admin, conn: DbConn) -> UserOut:
    return UserOut.of(await user_store.get_user(conn, user_id))


@router.patch(
    "/{user_id}",
    response_model=UserOut,
    responses={409: {"description": "an admin cannot take the admin role from themselves"}},
)
async def update_user(user_id: int, body: UserPatch, admin: Admin, conn: DbConn) -> UserOut:
    """Change a user's password or role; either ends every session of theirs at once."""
    changes: dict[str, object] = {}
    if body.role is not None:
        if user_id == admin.id and body.role is not Role.ADMIN:
            raise ApiError(409, "you cannot take the admin role from yourself")
        changes["role"] = body.role
    if body.password is not None:
        changes["password_hash"] = await hash_password(body.password)
    async with conn.transaction():
        # A token carries no role, but whoever holds one was given it for the old
        # password and role: every session of the user ends, API keys stay.
        user = await user_store.update_user(conn, user_id, changes, end_sessions=bool(changes))
        detail: dict[str, Any] = {"password_changed": body.password is not None}
        if body.role is not None:
            detail["role"] = body.role.value
        await audit_user_change(conn, admin, "user.update", user, detail)
    return UserOut.of(user)


@router.delete(
    "/{user_id}",
    status_code=204,
    responses={409: {"description": "an admin cannot delete themselves"}},
)
async def delete_user(user_id: int, admin: Admin, conn: DbConn) -> None:
    if user_id == admin.id:
        raise ApiError(409, "you cannot delete yourself")
    async with conn.transaction():
        user = await user_store.get_user(conn, user_id)
        await user_store.delete_user(conn, user_id)
        await audit_user_change(conn, admin, "user.delete", user, {})
