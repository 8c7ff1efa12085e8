"""Notification channels: where alerts are sent, and a test send to each. Admins manage them;
operators list them (to name them in rules), secrets redacted as for everyone.

Secrets are never answered: a webhook's `secret` and an e-mail `password` are left out
of `config`, and the URLs of Discord, Slack and Apprise (their path or host is the
credential) are shown as scheme and host only; `secrets_set` lists which secret fields
the channel has. A PATCH's `config` is laid over the stored one, so secrets need not be
sent again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fieldline.api.deps import Admin, DbConn, Operator
from fieldline.api.errors import ApiError
from fieldline.api.paging import Cursor, Limit
from fieldline.notify import changes
from fieldline.notify.config import ChannelConfigError, ChannelType, redacted
from fieldline.storage import notification_channels as channel_store
from fieldline.storage.notification_channels import NotificationChannel

router = APIRouter(prefix="/api/v1/notification-channels", tags=["notification channels"])

ChannelName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")]


class ChannelOut(BaseModel):
    id: int
    name: str
    type: ChannelType
    config: dict[str, Any] = Field(description="Secrets left out or shortened (see secrets_set)")
    secrets_set: list[str] = Field(
        description="Secret config fields the channel has: secret, password, or url (Discord, "
        "Slack, Apprise: shown as scheme and host only)"
    )
    enabled: bool
    failing_since: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, channel: NotificationChannel) -> ChannelOut:
        kind = ChannelType(channel.type)
        config, secrets_set = redacted(kind, channel.config)
        return cls(
            id=channel.id,
            name=channel.name,
            type=kind,
            config=config,
            secrets_set=secrets_set,
            enabled=channel.enabled,
            failing_since=channel.failing_since,
            last_error=channel.last_error,
            created_at=channel.created_at,
            updated_at=channel.updated_at,
        )


class ChannelCreate(BaseModel):
    name: ChannelName
    type: ChannelType
    config: dict[str, Any] = Field(
        description='webhook {"url","secret"}; discord, slack, apprise {"url"}; email {"host",'
        '"port","security": "starttls|tls|none","username","password","from","to": [...]}'
    )
    enabled: bool = True


class ChannelPatch(BaseModel):
    name: ChannelName | None = None
    config: dict[str, Any] | None = Field(
        None, description="Laid over the stored config; a key given null is removed"
    )
    enabled: bool | None = None


class ChannelList(BaseModel):
    items: list[ChannelOut]
    next_cursor: str | None


class TestResult(BaseModel):
    ok: bool
    status_code: int | None = Field(description="HTTP status or SMTP reply code, when one came")
    error: str | None
    duration_ms: float


def _invalid(exc: ChannelConfigError) -> ApiError:
    return ApiError(422, str(exc))


@router.get("", response_model=ChannelList)
async def list_channels(
    _: Operator, conn: DbConn, limit: Limit = 100, cursor: Cursor = None
) -> ChannelList:
    page = await channel_store.list_channels(conn, limit=limit, cursor=cursor)
    return ChannelList(items=[ChannelOut.of(c) for c in page.items], next_cursor=page.next_cursor)


@router.post(
    "",
    status_code=201,
    response_model=ChannelOut,
    responses={409: {"description": "a channel of that name exists"}},
)
async def create_channel(body: ChannelCreate, admin: Admin, conn: DbConn) -> ChannelOut:
    try:
        channel = await changes.create_channel(
            conn,
            actor=admin,
            name=body.name,
            kind=body.type,
            config=body.config,
            enabled=body.enabled,
        )
    except ChannelConfigError as exc:
        raise _invalid(exc) from exc
    return ChannelOut.of(channel)


@router.get("/{channel_id}", response_model=ChannelOut)
async def get_channel(channel_id: int, _: Operator, conn: DbConn) -> ChannelOut:
    return ChannelOut.of(await channel_store.get_channel(conn, channel_id))


@router.patch(
    "/{channel_id}",
    response_model=ChannelOut,
    responses={409: {"description": "a channel of that name exists"}},
)
async def update_channel(
    channel_id: int, body: ChannelPatch, admin: Admin, conn: DbConn
) -> ChannelOut:
    try:
        channel = await changes.update_channel(
            conn,
            actor=admin,
            channel_id=channel_id,
            name=body.name,
            config=body.config,
            enabled=body.enabled,
        )
    except ChannelConfigError as exc:
        raise _invalid(exc) from exc
    return ChannelOut.of(channel)


@router.delete(
    "/{channel_id}",
    status_code=204,
    responses={409: {"description": "an alert rule names the channel"}},
)
async def delete_channel(channel_id: int, admin: Admin, conn: DbConn) -> None:
    await changes.delete_channel(conn, actor=admin, channel_id=channel_id)


@router.post("/{channel_id}/test", response_model=TestResult)
async def test_channel(channel_id: int, admin: Admin, conn: DbConn) -> TestResult:
    """Send a test notification (`"event": "test"`) now and answer how it went."""
    trial = await changes.send_trial(conn, actor=admin, channel_id=channel_id)
    delivery = trial.delivery
    return TestResult(
        ok=delivery.ok,
        status_code=delivery.status_code,
        error=delivery.error,
        duration_ms=round(trial.duration_ms, 1),
    )
