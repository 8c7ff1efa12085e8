"""Alerts: what fired, when, on which device; acknowledging one (SPEC §6)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, Field

from fieldline.alerts.acknowledge import NotAcknowledgeableError, acknowledge
from fieldline.api.deps import DbConn, Operator, Viewer
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.domain.alerts import Severity
from fieldline.storage import alerts as alert_store
from fieldline.storage.alerts import StoredAlert

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class AlertOut(BaseModel):
    id: int
    kind: Literal["rule", "channel", "system"]
    rule_id: int | None = Field(description="null for channel and system alerts, and deleted rules")
    rule_name: str
    channel_id: int | None = Field(description="kind channel: the channel that keeps failing")
    severity: Severity
    device_id: str | None
    metric: str | None
    state: Literal["firing", "acknowledged", "resolved"]
    started_at: datetime = Field(description="The reading (or timer) time it fired at")
    started_value: float | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_note: str | None
    resolved_at: datetime | None
    resolved_value: float | None
    resolved_reason: str | None = Field(
        description="cleared, rule changed, rule disabled, rule deleted"
    )
    escalated_at: datetime | None
    last_notified_at: datetime | None
    silenced: bool = Field(description="A silence mutes its notifications now")


class AlertList(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


class BySeverity(BaseModel):
    info: int = 0
    warning: int = 0
    critical: int = 0


class AlertSummary(BaseModel):
    firing: BySeverity
    acknowledged: BySeverity


class AckIn(BaseModel):
    note: str | None = Field(None, max_length=1000)


def _out(alert: StoredAlert) -> AlertOut:
    return AlertOut.model_validate({name: getattr(alert, name) for name in AlertOut.model_fields})


@router.get("", response_model=AlertList)
async def list_alerts(
    _: Viewer,
    conn: DbConn,
    state: Annotated[
        Literal["firing", "acknowledged", "resolved", "active"] | None,
        Query(description="active: firing or acknowledged"),
    ] = None,
    severity: Severity | None = None,
    device_id: Annotated[str | None, Query(max_length=128)] = None,
    rule_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> AlertList:
    """Newest first."""
    page = await alert_store.list_alerts(
        conn,
        state=state,
        severity=None if severity is None else str(severity),
        device_id=device_id,
        rule_id=rule_id,
        now=datetime.now(UTC),
        limit=limit,
        cursor=cursor,
    )
    return AlertList(items=[_out(a) for a in page.items], next_cursor=page.next_cursor)


@router.get("/summary", response_model=AlertSummary)
async def alert_summary(_: Viewer, conn: DbConn) -> AlertSummary:
    """Open alerts by state and severity (the overview's counts)."""
    counts = await alert_store.active_counts(conn)
    by_state = {
        state: BySeverity(**{sev: n for (sev, s), n in counts.items() if s == state})
        for state in ("firing", "acknowledged")
    }
    return AlertSummary(**by_state)


@router.get("/{alert_id}", response_model=AlertOut)
async def get_alert(_: Viewer, conn: DbConn, alert_id: AlertId) -> AlertOut:
    alert = await alert_store.get_alert(conn, alert_id, datetime.now(UTC))
    if alert is None:
        raise ApiError(404, f"no alert {alert_id}")
    return _out(alert)


@router.post("/{alert_id}/ack", response_model=AlertOut)
async def acknowledge_alert(
    user: Operator,
    conn: DbConn,
    alert_id: AlertId,
    body: Annotated[AckIn | None, Body()] = None,
) -> AlertOut:
    """Someone is on it: repeats and escalation stop; `acknowledged` is notified.
    409 when the alert is resolved or already acknowledged."""
    note = body.note if body is not None else None
    try:
        alert = await acknowledge(conn, alert_id, username=user.username, note=note or None)
    except NotAcknowledgeableError as exc:
        raise ApiError(409, str(exc)) from exc
    return _out(alert)
