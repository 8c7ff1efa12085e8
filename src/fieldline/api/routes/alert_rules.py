"""Alert rules (SPEC §6): viewers read them and preview drafts, operators write them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from fieldline.alerts import preview as previews
from fieldline.alerts import rules
from fieldline.api.deps import DbConn, Operator, Viewer
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.domain.alerts import (
    MAX_SECONDS,
    RuleError,
    Severity,
    condition_json,
    parse_condition,
    parse_scope,
    scope_json,
)
from fieldline.storage import alert_rules as rule_store
from fieldline.storage import audit as audit_store
from fieldline.storage.alert_rules import AlertRule, RuleSpec

router = APIRouter(prefix="/api/v1/alert-rules", tags=["alerts"])

RuleId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Seconds = Annotated[int, Field(ge=0, le=MAX_SECONDS, description="Whole seconds; 0: never")]
ChannelIds = Annotated[
    list[Annotated[int, Field(ge=1, le=2**63 - 1)]],
    Field(max_length=100, description="Ids of notification channels"),
]
Scope = Annotated[
    dict[str, Any],
    Field(description='{} (the fleet), {"device_id"}, {"group"} (its name) or {"device_type"}'),
]
ConditionBody = Annotated[
    dict[str, Any],
    Field(
        description='{"type": "threshold", "metric", "op", "value", "for_seconds", '
        '"clear_value", "clear_for_seconds"}, {"type": "offline", "for_seconds"} or '
        '{"type": "no_data", "metric", "for_seconds"}; a value may be '
        '{"metadata": key, "default": number}'
    ),
]


class RuleOut(BaseModel):
    id: int
    name: str
    severity: Severity
    scope: dict[str, str]
    condition: dict[str, Any]
    channels: list[int]
    repeat_seconds: int
    escalate_after_seconds: int
    escalate_channels: list[int]
    enabled: bool
    revision: int = Field(description="Raised whenever scope or condition change")
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, rule: AlertRule) -> RuleOut:
        spec = rule.spec
        return cls(
            id=rule.id,
            name=spec.name,
            severity=spec.severity,
            scope=scope_json(spec.scope),
            condition=condition_json(spec.condition),
            channels=list(spec.channels),
            repeat_seconds=spec.repeat_seconds,
            escalate_after_seconds=spec.escalate_after_seconds,
            escalate_channels=list(spec.escalate_channels),
            enabled=spec.enabled,
            revision=rule.revision,
            created_by=rule.created_by,
            created_at=rule.created_at,
            updated_at=rule.updated_at,
        )


class RuleCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    severity: Severity
    scope: Scope = Field(default_factory=dict)
    condition: ConditionBody
    channels: ChannelIds = Field(default_factory=list)
    repeat_seconds: Seconds = 0
    escalate_after_seconds: Seconds = 0
    escalate_channels: ChannelIds = Field(default_factory=list)
    enabled: bool = True


class RulePatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=128)
    severity: Severity | None = None
    scope: Scope | None = None
    condition: ConditionBody | None = None
    channels: ChannelIds | None = None
    repeat_seconds: Seconds | None = None
    escalate_after_seconds: Seconds | None = None
    escalate_channels: ChannelIds | None = None
    enabled: bool | None = None


class RuleList(BaseModel):
    items: list[RuleOut]
    next_cursor: str | None


class PreviewIn(BaseModel):
    scope: Scope = Field(default_factory=dict)
    condition: ConditionBody
    start: datetime | None = Field(None, description="Default: 24 hours before end")
    end: datetime | None = Field(None, description="Default: now; at most 31 days after start")
    device_id: str | None = Field(None, max_length=128, description="Only this device")


class IntervalOut(BaseModel):
    start: datetime
    end: datetime | None = Field(description="null: still firing at the end of the range")
    start_value: float | None
    end_value: float | None


class DevicePreviewOut(BaseModel):
    device_id: str
    intervals: list[IntervalOut]


class PreviewOut(BaseModel):
    start: datetime
    end: datetime
    points: int = Field(description="Readings replayed")
    truncated: bool = Field(description="Too many devices or readings: some were left out")
    devices: list[DevicePreviewOut]


@contextlib.contextmanager
def _rule_refused() -> Iterator[None]:
    """A rule that cannot be evaluated, or names what does not exist, is the caller's 422."""
    try:
        yield
    except RuleError as exc:
        raise ApiError(422, str(exc)) from exc


def _changes(body: RulePatch) -> dict[str, Any]:
    """The patch as RuleSpec's fields, in domain types."""
    changes = body.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None:
            raise ApiError(422, f"{field} cannot be null")
    with _rule_refused():
        if "scope" in changes:
            changes["scope"] = parse_scope(changes["scope"])
        if "condition" in changes:
            changes["condition"] = parse_condition(changes["condition"])
    if "severity" in changes:
        changes["severity"] = Severity(changes["severity"])
    for field in ("channels", "escalate_channels"):
        if field in changes:
            changes[field] = tuple(dict.fromkeys(changes[field]))
    return changes


@router.get("", response_model=RuleList)
async def list_rules(
    _: Viewer,
    conn: DbConn,
    limit: Limit = 100,
    cursor: Cursor = None,
    enabled: Annotated[bool | None, Query()] = None,
    severity: Annotated[Severity | None, Query()] = None,
) -> RuleList:
    page = await rule_store.list_rules(
        conn, enabled=enabled, severity=severity, limit=limit, cursor=cursor
    )
    return RuleList(items=[RuleOut.of(r) for r in page.items], next_cursor=page.next_cursor)


@router.post("", status_code=201, response_model=RuleOut)
async def create_rule(body: RuleCreate, user: Operator, conn: DbConn) -> RuleOut:
    with _rule_refused():
        spec = RuleSpec(
            name=body.name,
            severity=body.severity,
            scope=parse_scope(body.scope),
            condition=parse_condition(body.condition),
            channels=tuple(dict.fromkeys(body.channels)),
            repeat_seconds=body.repeat_seconds,
            escalate_after_seconds=body.escalate_after_seconds,
            escalate_channels=tuple(dict.fromkeys(body.escalate_channels)),
            enabled=body.enabled,
        )
        rule = await rules.create_rule(
            conn, actor=audit_store.user_actor(user.username), created_by=user.username, spec=spec
        )
    return RuleOut.of(rule)


@router.post("/preview", response_model=PreviewOut)
async def preview_rule(body: PreviewIn, _: Viewer, conn: DbConn) -> PreviewOut:
    """When a draft rule would have fired and cleared over stored history (threshold and
    no_data rules): the readings replayed through the evaluator's own state machine."""
    now = datetime.now(UTC)
    with _rule_refused():
        scope, condition = parse_scope(body.scope), parse_condition(body.condition)
        start, end = previews.preview_range(_utc(body.start), _utc(body.end), now)
        result = await previews.preview(
            conn,
            scope=scope,
            condition=condition,
            start=start,
            end=end,
            now=now,
            device_id=body.device_id,
        )
    return PreviewOut.model_validate(result, from_attributes=True)


@router.get("/{rule_id}", response_model=RuleOut)
async def get_rule(rule_id: RuleId, _: Viewer, conn: DbConn) -> RuleOut:
    return RuleOut.of(await rule_store.get_rule(conn, rule_id))


@router.patch("/{rule_id}", response_model=RuleOut)
async def update_rule(rule_id: RuleId, body: RulePatch, user: Operator, conn: DbConn) -> RuleOut:
    """Change a rule. A new scope or condition raises its revision; that, or disabling
    it, resolves its open alerts (`resolved_reason` 'rule changed' or 'rule disabled')."""
    changes = _changes(body)
    with _rule_refused():
        rule = await rules.update_rule(
            conn, actor=audit_store.user_actor(user.username), rule_id=rule_id, changes=changes
        )
    return RuleOut.of(rule)


@router.delete("/{rule_id}", status_code=204)
async def delete_rule(rule_id: RuleId, user: Operator, conn: DbConn) -> None:
    """Delete a rule; its open alerts resolve ('rule deleted') and keep its name."""
    await rules.delete_rule(conn, actor=audit_store.user_actor(user.username), rule_id=rule_id)


def _utc(moment: datetime | None) -> datetime | None:
    """A time given without a zone is UTC, as the other time parameters take it."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
