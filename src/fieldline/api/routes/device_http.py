"""HTTP ingest for devices that cannot speak MQTT, and the device tokens it accepts.

A request body is one uplink telemetry message: decoded, limited, de-duplicated and
stored (or rejected and kept) exactly as MQTT ingest does with a message on
`devices/{device_id}/telemetry`. The answer waits for the commit, so a 2xx means
stored and any error status means nothing of the message was stored.

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
from fieldline.domain.readings import Reading, Rejection, RejectReason
from fieldline.domain.topics import Uplink
from fieldline.ingest.batcher import count_outcomes
from fieldline.ingest.decode import decode_telemetry, reported_firmware
from fieldline.ingest.service import decode_limits
from fieldline.storage.writer import (
    Batch,
    DeviceReadings,
    LimitedMessage,
    Presence,
    RejectedMessage,
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
    payload, too_large = await _read_body(request, settings.max_payload_bytes)
    outcome: list[Reading] | Rejection = too_large or decode_telemetry(
        payload,
        device_id=device_id,
        received_at=received_at,
        limits=decode_limits(settings.max_payload_bytes, settings.max_future_skew_seconds),
    )
    message = _Message(context, device_id, payload, received_at)
    if isinstance(outcome, Rejection):
        await message.reject(outcome)
        raise ApiError(_STATUS.get(outcome.reason, 422), outcome.detail, code=outcome.reason.value)
    readings = DeviceReadings(device_id, received_at, outcome)
    limiter = context.device_rate_limiter
    # Measured on arrival, unlike MQTT: no broker queue delivers an HTTP backlog at once.
    if limiter is not None and not limiter.allow(device_id, received_at.timestamp()):
        refusal = limiter.rejection()
        result = await message.write(
            Batch(
                limited=[
                    LimitedMessage(readings, message.rejected(refusal.reason, refusal.detail))
                ],
                presence=[Presence(device_id, received_at)],
            )
        )
        if not result.rejected_reasons:  # a copy of what is stored: not the device's fault
            return IngestAnswer(accepted=0, duplicates=result.duplicates)
        raise ApiError(
            429,
            refusal.detail,
            code=refusal.reason.value,
            headers={"Retry-After": str(math.ceil(1 / limiter.rate))},
        )
    firmware = reported_firmware(outcome)
    result = await message.write(
        Batch(
            telemetry=[readings],
            presence=[Presence(device_id, received_at, firmware_version=firmware)],
        )
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


class _Message:
    """One request's message on its way to the database, counted once its outcome is."""

    def __init__(
        self, context: ApiContext, device_id: str, payload: bytes, received_at: datetime
    ) -> None:
        self._context = context
        self._device_id = device_id
        self._payload = payload
        self._received_at = received_at
        self._topic = TOPIC_LABEL.format(device_id=device_id)

    def rejected(self, reason: RejectReason, detail: str) -> RejectedMessage:
        return RejectedMessage(
            self._received_at, self._device_id, self._topic, reason.value, detail, self._payload
        )

    async def reject(self, rejection: Rejection) -> None:
        reason = rejection.reason
        log.log(
            logging.DEBUG if reason is RejectReason.RATE_LIMITED else logging.INFO,
            "message rejected",
            extra={"device_id": self._device_id, "topic": self._topic, "reason": reason.value},
        )
        await self.write(
            Batch(
                rejected=[self.rejected(reason, rejection.detail)],
                presence=[Presence(self._device_id, self._received_at)],
            )
        )

    async def write(self, batch: Batch) -> WriteResult:
        """Store `batch` (this message's outcome) and count it; a message the database
        refuses is kept as `unstorable` and answered 422."""
        try:
            result = await _store(self._context, batch)
        except Exception as exc:
            if not unstorable(exc):
                raise
            detail = unstorable_detail(exc)
            log.warning(
                "message refused by the database; kept as rejected",
                extra={"device_id": self._device_id, "topic": self._topic, "error": detail},
            )
            rejection = self.rejected(RejectReason.UNSTORABLE, detail)
            self._count(await _store(self._context, Batch(rejected=[rejection])))
            raise ApiError(422, detail, code=RejectReason.UNSTORABLE.value) from exc
        self._count(result)
        return result

    def _count(self, result: WriteResult) -> None:
        metrics = self._context.metrics
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
