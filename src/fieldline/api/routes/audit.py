"""The audit log (admin only): who did what to which resource, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from fieldline.api.deps import Admin, DbConn
from fieldline.api.paging import Cursor, Limit
from fieldline.api.timeparams import parse_instant
from fieldline.storage import audit as audit_store

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


class AuditOut(BaseModel):
    id: int
    time: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    detail: dict[str, Any]


class AuditList(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


@router.get("", response_model=AuditList)
async def list_audit(
    _: Admin,
    conn: DbConn,
    actor: Annotated[str | None, Query(max_length=200, description="e.g. user:alice")] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. device.disable")] = None,
    target_type: Annotated[str | None, Query(max_length=64)] = None,
    target_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[str | None, Query(description="ISO 8601 or epoch seconds")] = None,
    until: Annotated[str | None, Query(description="ISO 8601 or epoch seconds")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> AuditList:
    page = await audit_store.list_entries(
        conn,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        since=parse_instant(since, "since"),
        until=parse_instant(until, "until"),
        limit=limit,
        cursor=cursor,
    )
    return AuditList(
        items=[AuditOut.model_validate(entry, from_attributes=True) for entry in page.items],
        next_cursor=page.next_cursor,
    )
