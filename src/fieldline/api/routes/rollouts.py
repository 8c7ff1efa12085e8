"""Rollouts (SPEC §5, docs/ota.md): an image to a target, in stages, stopping itself.

The API writes what operators decide (a new rollout, a raised percentage, pause, resume,
cancel) and reads progress; the worker's rounds do the rest (ota/engine.py). Each change
is in the audit log in the transaction that makes it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field, model_validator

from fieldline.api.deps import DbConn, Operator, Viewer
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.domain.firmware import is_downgrade
from fieldline.storage import audit as audit_store
from fieldline.storage import devices as device_store
from fieldline.storage import firmware as firmware_store
from fieldline.storage import rollouts as rollout_store
from fieldline.storage.rollouts import DEVICE_STATES

router = APIRouter(prefix="/api/v1", tags=["rollouts"])

RolloutId = Annotated[int, Path(ge=1, le=2**63 - 1)]
DeviceState = Literal[
    "pending",
    "notified",
    "downloading",
    "downloaded",
    "installing",
    "installed",
    "verifying",
    "succeeded",
    "failed",
    "rolled_back",
    "timed_out",
    "skipped",
    "cancelled",
]


class FirmwareRef(BaseModel):
    device_model: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)


class Target(BaseModel):
    groups: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=1000
    )
    device_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=100_000
    )


class Stage(BaseModel):
    devices: int | None = Field(None, ge=1, le=10_000_000, description="A count: a canary")
    percentage: float | None = Field(None, gt=0, le=100)
    after_seconds: int = Field(
        0, ge=0, le=365 * 86400, description="Starts this long after the previous stage began"
    )

    @model_validator(mode="after")
    def _one_share(self) -> Stage:
        if (self.devices is None) == (self.percentage is None):
            raise ValueError("a stage is either `devices` (a count) or a `percentage`")
        return self


class Abort(BaseModel):
    min_finished: int = Field(5, ge=1, description="Judge only once this many devices finished")
    failure_percent: float = Field(
        20, ge=0, le=100, description="Pause when failures are above this share of finished"
    )


class RolloutIn(BaseModel):
    firmware: FirmwareRef
    target: Target
    percentage: float | None = Field(None, gt=0, le=100)
    stages: list[Stage] | None = Field(None, min_length=1, max_length=20)
    max_per_minute: int = Field(60, ge=1, le=100_000)
    device_timeout_seconds: int = Field(3600, ge=1, le=30 * 86400)
    settle_seconds: int = Field(300, ge=0, le=7 * 86400)
    abort: Abort = Field(default_factory=lambda: Abort(min_finished=5, failure_percent=20))
    allow_downgrade: bool = False
    required: bool = False

    @model_validator(mode="after")
    def _share(self) -> RolloutIn:
        if (self.percentage is None) == (self.stages is None):
            raise ValueError("give either `percentage` or `stages`")
        if not self.target.groups and not self.target.device_ids:
            raise ValueError("the target names no group and no device")
        return self

    def stage_list(self) -> list[dict[str, Any]]:
        if self.stages is None:
            return [{"percentage": self.percentage, "after_seconds": 0}]
        return [stage.model_dump(exclude_none=True) for stage in self.stages]


class RolloutPatch(BaseModel):
    percentage: float | None = Field(None, gt=0, le=100, description="Raise the share by hand")
    action: Literal["pause", "resume", "cancel"] | None = None

    @model_validator(mode="after")
    def _something(self) -> RolloutPatch:
        if (self.percentage is None) == (self.action is None):
            raise ValueError("give either `percentage` or `action`")
        return self


class RolloutDevice(BaseModel):
    device_id: str
    state: DeviceState
    from_version: str | None
    progress: int | None
    error: str | None
    notified_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class RolloutOut(BaseModel):
    id: int
    firmware: FirmwareRef
    target: Target
    stages: list[dict[str, Any]]
    stage: int = Field(description="Index of the current stage")
    stage_started_at: datetime
    percentage: float | None = Field(description="Raised by hand (null: the stages' share)")
    max_per_minute: int
    device_timeout_seconds: int
    settle_seconds: int
    abort: Abort
    allow_downgrade: bool
    required: bool
    state: Literal["running", "paused", "completed", "cancelled"]
    pause_reason: str | None
    paused_by: str | None = Field(description="Who paused it by hand; null otherwise")
    auto_paused: bool = Field(description="It paused itself: its failures passed the threshold")
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    counts: dict[str, int] = Field(description="Devices per state")
    devices: list[RolloutDevice] | None = Field(
        None, description="The devices with their states (GET of one rollout)"
    )

    @classmethod
    def of(
        cls,
        row: dict[str, Any],
        counts: dict[str, int],
        devices: list[dict[str, Any]] | None = None,
    ) -> RolloutOut:
        return cls(
            id=row["id"],
            firmware=FirmwareRef(device_model=row["device_model"], version=row["version"]),
            target=Target(groups=row["group_names"], device_ids=row["target_devices"]),
            stages=row["stages"],
            stage=row["stage"],
            stage_started_at=row["stage_started_at"],
            percentage=row["manual_percentage"],
            max_per_minute=row["max_per_minute"],
            device_timeout_seconds=row["device_timeout_seconds"],
            settle_seconds=row["settle_seconds"],
            abort=Abort(
                min_finished=row["abort_min_finished"],
                failure_percent=row["abort_failure_percent"],
            ),
            allow_downgrade=row["allow_downgrade"],
            required=row["required"],
            state=row["state"],
            pause_reason=row["pause_reason"],
            paused_by=row["paused_by"],
            auto_paused=row["state"] == "paused" and row["paused_by"] is None,
            created_by=row["created_by"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            counts={state: counts.get(state, 0) for state in DEVICE_STATES},
            devices=None if devices is None else [RolloutDevice(**d) for d in devices],
        )


class RolloutList(BaseModel):
    items: list[RolloutOut]
    next_cursor: str | None


class Preview(BaseModel):
    targeted: int = Field(description="Enabled devices of the model the target holds")
    other_model: int = Field(description="Devices the target holds of other models")
    already_on_version: int
    newer: int = Field(description="On a newer version: skipped unless downgrades are allowed")


class UpdateHistory(BaseModel):
    rollout_id: int
    device_model: str
    version: str
    from_version: str | None
    state: DeviceState
    progress: int | None
    error: str | None
    rollout_state: str
    entered_at: datetime
    notified_at: datetime | None
    finished_at: datetime | None


class UpdateHistoryList(BaseModel):
    items: list[UpdateHistory]


_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such rollout"}}
_BAD_TARGET: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such firmware"},
    422: {"description": "a group that does not exist, or an invalid body"},
}


async def _group_ids(conn: DbConn, names: list[str]) -> list[int]:
    ids = await device_store.group_ids(conn, names)
    missing = sorted(set(names) - set(ids))
    if missing:
        raise ApiError(422, f"no group named {', '.join(map(repr, missing))}")
    return [ids[name] for name in names]


@router.post("/rollouts/preview", response_model=Preview, responses=_BAD_TARGET)
async def preview(body: RolloutIn, _: Viewer, conn: DbConn) -> Preview:
    """How many devices the rollout would reach, before it is created."""
    firmware = await firmware_store.get(conn, body.firmware.device_model, body.firmware.version)
    devices = await rollout_store.targeted(
        conn,
        device_model=None,
        group_ids=await _group_ids(conn, body.target.groups),
        device_ids=body.target.device_ids,
    )
    ours = [d for d in devices if d["device_type"] == firmware.device_model]
    return Preview(
        targeted=len(ours),
        other_model=len(devices) - len(ours),
        already_on_version=sum(d["firmware_version"] == firmware.version for d in ours),
        newer=sum(is_downgrade(d["firmware_version"], firmware.version) for d in ours),
    )


@router.post("/rollouts", status_code=201, response_model=RolloutOut, responses=_BAD_TARGET)
async def create_rollout(body: RolloutIn, user: Operator, conn: DbConn) -> RolloutOut:
    """Start rolling an image out; the worker tells the first devices within a second."""
    firmware = await firmware_store.get(conn, body.firmware.device_model, body.firmware.version)
    async with conn.transaction():
        rollout_id = await rollout_store.create(
            conn,
            firmware_id=firmware.id,
            group_ids=await _group_ids(conn, body.target.groups),
            device_ids=body.target.device_ids,
            stages=body.stage_list(),
            max_per_minute=body.max_per_minute,
            device_timeout_seconds=body.device_timeout_seconds,
            settle_seconds=body.settle_seconds,
            abort_min_finished=body.abort.min_finished,
            abort_failure_percent=body.abort.failure_percent,
            allow_downgrade=body.allow_downgrade,
            required=body.required,
            created_by=user.username,
        )
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action="rollout.create",
            target_type="rollout",
            target_id=str(rollout_id),
            detail=body.model_dump(mode="json"),
        )
    return await _one(conn, rollout_id, device_limit=0)


async def _one(
    conn: DbConn, rollout_id: int, *, device_limit: int, state: str | None = None
) -> RolloutOut:
    row = await rollout_store.get(conn, rollout_id)
    counts = await rollout_store.counts(conn, [rollout_id])
    devices = (
        await rollout_store.devices(conn, rollout_id, state=state, limit=device_limit)
        if device_limit
        else None
    )
    return RolloutOut.of(row, counts[rollout_id], devices)


@router.get("/rollouts", response_model=RolloutList)
async def list_rollouts(
    _: Viewer,
    conn: DbConn,
    state: Annotated[Literal["running", "paused", "completed", "cancelled"] | None, Query()] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> RolloutList:
    """Rollouts, newest first, with their counts per device state."""
    page = await rollout_store.list_rollouts(conn, state, limit=limit, cursor=cursor)
    counts = await rollout_store.counts(conn, [row["id"] for row in page.items])
    return RolloutList(
        items=[RolloutOut.of(row, counts[row["id"]]) for row in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/rollouts/{rollout_id}", response_model=RolloutOut, responses=_NOT_FOUND)
async def get_rollout(
    rollout_id: RolloutId,
    _: Viewer,
    conn: DbConn,
    state: Annotated[DeviceState | None, Query(description="Only devices in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> RolloutOut:
    """A rollout, its counts and its devices (failures first)."""
    return await _one(conn, rollout_id, device_limit=limit, state=state)


@router.patch(
    "/rollouts/{rollout_id}",
    response_model=RolloutOut,
    responses={**_NOT_FOUND, 409: {"description": "the rollout is over, or already so"}},
)
async def change_rollout(
    rollout_id: RolloutId, body: RolloutPatch, user: Operator, conn: DbConn
) -> RolloutOut:
    """Raise the percentage, or pause, resume or cancel."""
    now = datetime.now(UTC)
    async with conn.transaction():
        row = await rollout_store.get(conn, rollout_id, lock=True)
        state = row["state"]
        if state in ("completed", "cancelled"):
            raise ApiError(409, f"rollout {rollout_id} is {state}")
        changes: dict[str, Any]
        if body.percentage is not None:
            current = row["manual_percentage"] or 0.0
            if body.percentage < current:
                raise ApiError(409, f"the percentage is {current:g} already; it only grows")
            changes = {"manual_percentage": body.percentage}
        elif body.action == "pause":
            if state == "paused":
                raise ApiError(409, f"rollout {rollout_id} is paused already")
            changes = {
                "state": "paused",
                "paused_at": now,
                "pause_reason": f"paused by {user.username}",
                "paused_by": user.username,
            }
        elif body.action == "resume":
            if state == "running":
                raise ApiError(409, f"rollout {rollout_id} is running already")
            paused_for = now - (row["paused_at"] or now)
            changes = {
                "state": "running",
                "paused_at": None,
                "pause_reason": None,
                "paused_by": None,
                "counting_since": now,  # the abort criteria judge what happens from now
                "stage_started_at": row["stage_started_at"] + paused_for,  # the schedule waited
                "tokens_at": now,
            }
        else:
            await rollout_store.cancel_devices(conn, rollout_id)
            changes = {"state": "cancelled", "finished_at": now}
        await rollout_store.update(conn, rollout_id, changes)
        await audit_store.record(
            conn,
            actor=audit_store.user_actor(user.username),
            action=f"rollout.{body.action or 'percentage'}",
            target_type="rollout",
            target_id=str(rollout_id),
            detail=body.model_dump(mode="json", exclude_none=True),
        )
    return await _one(conn, rollout_id, device_limit=0)


@router.get(
    "/devices/{device_id}/updates",
    response_model=UpdateHistoryList,
    responses={404: {"description": "no such device"}},
)
async def device_updates(
    device_id: Annotated[str, Path(min_length=1, max_length=128)],
    _: Viewer,
    conn: DbConn,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> UpdateHistoryList:
    """The device's firmware updates, newest first."""
    await device_store.get_device(conn, device_id)
    rows = await rollout_store.device_history(conn, device_id, limit)
    return UpdateHistoryList(items=[UpdateHistory(**row) for row in rows])
