"""HTTP ingest for devices that cannot speak MQTT, and the device tokens it accepts.

A request body is one uplink telemetry message: decoded, limited, de-duplicated and
stored (or rejected and kept) by the consumer MQTT ingest gives each message on
`devices/{device_id}/telemetry` (ingest/consumer.py), and written through the same
path, as a batch of one. The answer waits for the commit, so a 2xx means stored
and any error status means nothing of the message was stored; the database being
unavailable is answered 503 at once rather than retried.

Rejected messages are kept with the topic label `http:/api/v1/devices/{device_id}/telemetry`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from fieldline.api.context import ApiContext
from fieldline.api.deps import Context
from fieldline.api.device_auth import AuthenticatedDevice, BasicDevice, issue_device_token
from fieldline.api.errors import ApiError
from fieldline.domain.readings import Rejection, RejectReason
from fieldline.domain.topics import Uplink
from fieldline.ingest.batcher import count_outcomes
from fieldline.ingest.consumer import (
    Message,
    batch_of,
    kept_as_unstorable,
)
from fieldline.storage.writer import (
    Batch,
    WriteResult,
    unstorable,
    unstorable_detail,
    write_batch,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/devices", tags=["device uplink"])

TOPIC_LABEL = "http:/api/v1/devices/{device_id}/telemetry"
_STATUS = {
    RejectReason.INVALID_JSON: 400,
    RejectReason.TOO_LARGE: 413,
    RejectReason.RATE_LIMITED: 429,
}
UNAVAILABLE_RETRY_SECONDS = "5"


class IngestAnswer(BaseModel):
    accepted: int = Field(description="Readings stored by this request")
    duplicates: int = Field(
        description="Readings already stored before (their message_id was seen): not stored again"
    )
    rejected: int = Field(
        default=0,
        description="Always 0: a message is stored or rejected whole, and a rejection is an error",
    )


class DeviceTokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime
    expires_in: int = Field(description="Seconds the token is valid for")


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid_json: not JSON, or not UTF-8; kept in the rejected store"},
    401: {"description": "unknown or disabled device, wrong password, or a bad device token"},
    403: {"description": "authenticated as another device than the path names"},
    413: {"description": "too_large: over FIELDLINE_MAX_PAYLOAD_BYTES; kept (its first bytes)"},
    422: {
        "description": "any other rejection reason (docs/devices.md), among them "
        "invalid_text, invalid_name and unstorable (the database refused it); kept"
    },
    429: {"description": "rate_limited: over the device's rate limit; kept; see Retry-After"},
    503: {"description": "the database is unavailable; nothing stored, send again later"},
}


@router.post(
    "/{device_id}/token",
    response_model=DeviceTokenOut,
    responses={401: _ERRORS[401], 403: _ERRORS[403]},
)
async def device_token(device: BasicDevice, context: Context, response: Response) -> DeviceTokenOut:
    """A short-lived bearer token for HTTP ingest, for the device's Basic credentials.

    It stops working when the device is disabled or deleted or its credentials rotate.
    """
    ttl = timedelta(minutes=context.settings.device_token_minutes)
    token = issue_device_token(
        secret_key=context.secret_key,
        device_id=device.device_id,
        secret_hash=device.secret_hash,
        ttl=ttl,
    )
    response.headers["Cache-Control"] = "no-store"  # a credential: no cache may keep it
    return DeviceTokenOut(
        access_token=token.token, expires_at=token.expires_at, expires_in=int(ttl.total_seconds())
    )


@router.post(
    "/{device_id}/telemetry", status_code=202, response_model=IngestAnswer, responses=_ERRORS
)
async def post_telemetry(
    device: AuthenticatedDevice, request: Request, context: Context
) -> IngestAnswer:
    """One telemetry message in any form of the device contract (docs/devices.md).

    The body is read as JSON whatever its Content-Type says. De-duplication by
    `message_id` is shared with MQTT: a message sent both ways is stored once.
    """
    received_at = datetime.now(UTC)
    device_id = device.device_id
    settings = context.settings
    topic = TOPIC_LABEL.format(device_id=device_id)
    payload, too_large = await _read_body(request, settings.max_payload_bytes)
    limiter = context.device_rate_limiter
    uplinks = context.uplinks
    message = (
        uplinks.reject(topic, device_id, payload, received_at, too_large)
        if too_large is not None
        else uplinks.consume(device_id, Uplink.TELEMETRY, topic, payload, received_at)
    )
    result = await _write(context, message)
    _, _, _, _, rejected, _, limited = message
    if rejected is not None:
        reason = RejectReason(rejected.reason)
        raise ApiError(_STATUS.get(reason, 422), rejected.detail, code=reason.value)
    if limited is not None and limiter is not None:
        if not result.rejected_reasons:  # a copy of what is stored: not the device's fault
            return IngestAnswer(accepted=0, duplicates=result.duplicates)
        raise ApiError(
            429,
            limited.rejected.detail,
            code=limited.rejected.reason,
            headers={"Retry-After": str(math.ceil(1 / limiter.rate))},
        )
    return IngestAnswer(accepted=result.readings_stored, duplicates=result.duplicates)


async def _read_body(request: Request, limit: int) -> tuple[bytes, Rejection | None]:
    """The body; past `limit` bytes, only its first `limit` bytes and a too_large rejection.

    Reading stops after `limit` bytes, whatever the client sends or announces, so no
    more than that and one chunk is ever held.
    """
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else None
    body = bytearray()
    try:
        async with contextlib.aclosing(request.stream()) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > limit:
                    break
    except ClientDisconnect as exc:
        raise ApiError(400, "the client disconnected before the body was complete") from exc
    if len(body) <= limit and (size is None or size <= limit):
        return bytes(body), None
    what = f"{size} bytes" if size is not None and size > limit else f"over {limit} bytes"
    rejection = Rejection(
        RejectReason.TOO_LARGE,
        f"payload is {what}; the limit is {limit} bytes (the first {limit} are kept)",
    )
    return bytes(body[:limit]), rejection


async def _write(context: ApiContext, message: Message) -> WriteResult:
    """Store the request's message as a batch of one and count it; a message the database
    refuses is kept as `unstorable` and answered 422."""
    try:
        result = await _store(context, batch_of([message]))
    except Exception as exc:
        if not unstorable(exc):
            raise
        detail = unstorable_detail(exc)
        _count(context, await _store(context, kept_as_unstorable(message, detail)))
        raise ApiError(422, detail, code=RejectReason.UNSTORABLE.value) from exc
    _count(context, result)
    return result


def _count(context: ApiContext, result: WriteResult) -> None:
    metrics = context.metrics
    metrics.messages_received.labels(kind=Uplink.TELEMETRY.value).inc()
    count_outcomes(metrics, 1, result)


async def _store(context: ApiContext, batch: Batch) -> WriteResult:
    try:
        async with context.pool.connection() as conn:
            return await write_batch(conn, batch, context.partitions)
    except psycopg.OperationalError as exc:
        log.warning("HTTP ingest cannot reach the database", extra={"error": str(exc)})
        raise ApiError(
            503,
            "the database is unavailable; nothing was stored, send it again later",
            headers={"Retry-After": UNAVAILABLE_RETRY_SECONDS},
        ) from exc
