"""Rejected uplink messages, with the reason and the raw payload as it arrived."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from fieldline.api.deps import DbConn, Operator
from fieldline.api.paging import Cursor, Limit
from fieldline.api.timeparams import parse_instant
from fieldline.storage import rejected as rejected_store

router = APIRouter(prefix="/api/v1/rejected", tags=["telemetry"])


class RejectedOut(BaseModel):
    id: int
    received_at: datetime
    device_id: str | None
    topic: str
    reason: str
    detail: str
    size_bytes: int
    payload_text: str | None = Field(description="The payload as UTF-8, when it is valid UTF-8")
    payload_base64: str = Field(description="The exact bytes received")


class RejectedList(BaseModel):
    items: list[RejectedOut]
    next_cursor: str | None


def _text(payload: bytes) -> str | None:
    try:
        return payload.decode()
    except UnicodeDecodeError:
        return None


@router.get("", response_model=RejectedList)
async def list_rejected(
    _: Operator,
    conn: DbConn,
    device_id: Annotated[str | None, Query(max_length=128)] = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[str | None, Query(description="ISO 8601 or epoch seconds")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> RejectedList:
    """Newest first."""
    page = await rejected_store.list_rejected(
        conn,
        device_id=device_id,
        reason=reason,
        since=parse_instant(since, "since"),
        limit=limit,
        cursor=cursor,
    )
    return RejectedList(
        items=[
            RejectedOut(
                id=r.id,
                received_at=r.received_at,
                device_id=r.device_id,
                topic=r.topic,
                reason=r.reason,
                detail=r.detail,
                size_bytes=len(r.payload),
                payload_text=_text(r.payload),
                payload_base64=base64.b64encode(r.payload).decode(),
            )
            for r in page.items
        ],
        next_cursor=page.next_cursor,
    )
