"""The outbox as operators see it: every notification, its status and each attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from fieldline.api.deps import DbConn, Operator
from fieldline.api.paging import Cursor, Limit
from fieldline.storage import notifications as outbox

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])

Status = Literal["pending", "delivered", "failed", "suppressed"]


class AttemptOut(BaseModel):
    at: datetime
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float


class NotificationOut(BaseModel):
    id: int
    alert_id: int | None
    channel_id: int
    channel_name: str
    event: str
    idempotency_key: str
    status: Status
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_log: list[AttemptOut]


class NotificationList(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None


@router.get("", response_model=NotificationList)
async def list_notifications(
    _: Operator,
    conn: DbConn,
    alert_id: int | None = None,
    channel_id: int | None = None,
    status: Status | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> NotificationList:
    """Newest first; each with its attempts, oldest first."""
    page = await outbox.list_notifications(
        conn,
        alert_id=alert_id,
        channel_id=channel_id,
        status=status,
        limit=limit,
        cursor=cursor,
    )
    return NotificationList(
        items=[NotificationOut.model_validate(n, from_attributes=True) for n in page.items],
        next_cursor=page.next_cursor,
    )
