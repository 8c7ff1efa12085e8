"""Silences (SPEC §6): mute a device, a group or a rule until a time; viewers list them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from fieldline.api.deps import DbConn, Operator, Viewer
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.storage import audit as audit_store
from fieldline.storage import silences as silence_store
from fieldline.storage.silences import Silence, SilenceTargetError

router = APIRouter(prefix="/api/v1/silences", tags=["alerts"])

SilenceId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class SilenceOut(BaseModel):
    id: int
    device_id: str | None
    group: str | None
    rule_id: int | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime
    active: bool = Field(description="In force now: starts_at <= now < ends_at")

    @classmethod
    def of(cls, silence: Silence) -> SilenceOut:
        return cls(
            id=silence.id,
            device_id=silence.device_id,
            group=silence.group_name,
            rule_id=silence.rule_id,
            starts_at=silence.starts_at,
            ends_at=silence.ends_at,
            reason=silence.reason,
            created_by=silence.created_by,
            created_at=silence.created_at,
            active=silence.active,
        )


class SilenceCreate(BaseModel):
    device_id: str | None = Field(None, min_length=1, max_length=128)
    group: str | None = Field(None, min_length=1, max_length=128, description="A group's name")
    rule_id: int | None = Field(None, ge=1, le=2**63 - 1)
    starts_at: datetime | None = Field(None, description="Default: now")
    ends_at: datetime = Field(description="In the future, after starts_at")
    reason: str = Field(min_length=1, max_length=500)


class SilenceList(BaseModel):
    items: list[SilenceOut]
    next_cursor: str | None


def _utc(moment: datetime) -> datetime:
    """A time given without a zone is UTC, as the other time parameters take it."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@router.get("", response_model=SilenceList)
async def list_silences(
    _: Viewer,
    conn: DbConn,
    limit: Limit = 100,
    cursor: Cursor = None,
    active: Annotated[bool | None, Query(description="Only those in force now, or not")] = None,
) -> SilenceList:
    """Newest first."""
    page = await silence_store.list_silences(conn, active=active, limit=limit, cursor=cursor)
    return SilenceList(items=[SilenceOut.of(s) for s in page.items], next_cursor=page.next_cursor)


@router.post("", status_code=201, response_model=SilenceOut)
async def create_silence(body: SilenceCreate, user: Operator, conn: DbConn) -> SilenceOut:
    """Mute exactly one of a device, a group or a rule: its alerts are still recorded,
    their notifications are kept as `suppressed`."""
    given: dict[str, Any] = {
        column: value
        for column, value in (
            ("device_id", body.device_id),
            ("group_name", body.group),
            ("rule_id", body.rule_id),
        )
        if value is not None
    }
    if len(given) != 1:
        raise ApiError(422, "give exactly one of device_id, group or rule_id")
    if not body.reason.strip():
        raise ApiError(422, "reason: say why (it cannot be blank)")
    ends_at, starts_at = _utc(body.ends_at), body.starts_at and _utc(body.starts_at)
    if ends_at <= datetime.now(UTC):
        raise ApiError(422, "ends_at: must be in the future")
    if starts_at is not None and ends_at <= starts_at:
        raise ApiError(422, "ends_at: must be after starts_at")
    [(target, value)] = given.items()
    async with conn.transaction():
        try:
            silence = await silence_store.create_silence(
                conn,
                target=target,
                value=value,
                starts_at=starts_at,
                ends_at=ends_at,
                reason=body.reason,
                created_by=user.username,
            )
        except SilenceTargetError as exc:
            raise ApiError(422, f"{'group' if target == 'group_name' else target}: {exc}") from exc
        out = SilenceOut.of(silence)
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="silence.create",
            target_type="silence",
            target_id=str(silence.id),
            detail=out.model_dump(
                mode="json",
                include={"device_id", "group", "rule_id", "starts_at", "ends_at", "reason"},
            ),
        )
    return out


@router.delete("/{silence_id}", status_code=204)
async def delete_silence(silence_id: SilenceId, user: Operator, conn: DbConn) -> None:
    """End a silence now (it is removed)."""
    async with conn.transaction():
        silence = await silence_store.delete_silence(conn, silence_id)
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="silence.delete",
            target_type="silence",
            target_id=str(silence_id),
            detail=SilenceOut.of(silence).model_dump(
                mode="json", include={"device_id", "group", "rule_id", "ends_at", "reason"}
            ),
        )
