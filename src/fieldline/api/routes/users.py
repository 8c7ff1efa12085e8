"""Users and roles (admin only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fieldline import users
from fieldline.api.deps import Admin, DbConn
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.domain.users import Role, User
from fieldline.storage import users as user_store

router = APIRouter(prefix="/api/v1/users", tags=["users"])

# Every password a user is given or chooses meets this (creation, an admin's change,
# the user's own change): users.passwords is the policy, stated here for OpenAPI.
NewPassword = Annotated[
    str, Field(min_length=users.MIN_PASSWORD_LENGTH, max_length=users.MAX_PASSWORD_LENGTH)
]


class UserOut(BaseModel):
    id: int
    username: str
    role: Role
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls.model_validate(user, from_attributes=True)


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
    user = await users.create_user(
        conn, username=body.username, password=body.password, role=body.role, actor=admin
    )
    return UserOut.of(user)


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
    try:
        user = await users.update_user(
            conn, actor=admin, user_id=user_id, password=body.password, role=body.role
        )
    except users.SelfLockoutError as exc:
        raise ApiError(409, str(exc)) from exc
    return UserOut.of(user)


@router.delete(
    "/{user_id}",
    status_code=204,
    responses={409: {"description": "an admin cannot delete themselves"}},
)
async def delete_user(user_id: int, admin: Admin, conn: DbConn) -> None:
    try:
        await users.delete_user(conn, actor=admin, user_id=user_id)
    except users.SelfLockoutError as exc:
        raise ApiError(409, str(exc)) from exc
