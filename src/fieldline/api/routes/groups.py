"""Groups: the sites, farms or depots devices belong to."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fieldline.api.deps import DbConn, Operator, Viewer
from fieldline.api.paging import Cursor, Limit
from fieldline.domain.devices import Group
from fieldline.storage import audit as audit_store
from fieldline.storage import devices as device_store

router = APIRouter(prefix="/api/v1/groups", tags=["groups"])


class GroupOut(BaseModel):
    id: int
    name: str
    description: str
    created_at: datetime

    @classmethod
    def of(cls, group: Group) -> GroupOut:
        return cls(
            id=group.id, name=group.name, description=group.description, created_at=group.created_at
        )


class GroupCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    description: str = Field("", max_length=2000)


class GroupList(BaseModel):
    items: list[GroupOut]
    next_cursor: str | None


@router.get("", response_model=GroupList)
async def list_groups(
    _: Viewer, conn: DbConn, limit: Limit = 100, cursor: Cursor = None
) -> GroupList:
    page = await device_store.list_groups(conn, limit=limit, cursor=cursor)
    return GroupList(items=[GroupOut.of(g) for g in page.items], next_cursor=page.next_cursor)


@router.post(
    "",
    status_code=201,
    response_model=GroupOut,
    responses={409: {"description": "conflict: a group with this name exists"}},
)
async def create_group(body: GroupCreate, user: Operator, conn: DbConn) -> GroupOut:
    async with conn.transaction():
        group = await device_store.create_group(conn, name=body.name, description=body.description)
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="group.create",
            target_type="group",
            target_id=group.name,
        )
    return GroupOut.of(group)
