"""The one consumer of device uplinks: what a received message becomes, whichever door.

MQTT ingest (`IngestConsumer` in ingest/service.py) hands `UplinkConsumer` each
delivery, HTTP ingest (api/routes/device_http.py) each request body. Decoding,
size and time limits, the per-device rate limits, rejection reasons and their
texts, presence and command results are decided here once, so a rule added to
ingest holds for both doors. A door adds only what is its own: MQTT parses the
topic and acknowledges after the commit; HTTP reads the body and answers after it.

What a message becomes is a `Message`, written through one path: `batch_of` turns
messages into the writer's `Batch` (storage/writer.py), and `kept_as_unstorable`
turns one the database refused into its rejection. MQTT collects messages into
batches (ingest/batcher.py); HTTP writes each request's message as a batch of one.
Where ingest batching is tuned: see ingest/batcher.py's docstring.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from fieldline.domain.devices import ConnectionStatus
from fieldline.domain.readings import Reading, Rejection, RejectReason
from fieldline.domain.topics import Uplink
from fieldline.ingest.decode import (
    DecodeLimits,
    decode_command_result,
    decode_ota_progress,
    decode_status,
    decode_telemetry,
    reported_firmware,
)
from fieldline.ingest.ratelimit import DeviceRateLimiter
from fieldline.storage.commands import ReportedResult
from fieldline.storage.rollouts import ProgressReport
from fieldline.storage.writer import (
    Batch,
    DeviceReadings,
    LimitedMessage,
    Presence,
    RejectedMessage,
)

log = logging.getLogger(__name__)

# For its rate limit, a message counts as sent no earlier than this before it arrived
# (see _sent_at): a broker's backlog younger than this is judged by when it was sent.
SENT_AT_WINDOW_SECONDS = 3600.0

# One message as it arrived (topic, payload) and what it became: telemetry to store,
# the device's presence, a rejection, a command result, or telemetry over its rate
# limit. A plain tuple: one is built per message on the hot path.
Message = tuple[
    str,
    bytes,
    DeviceReadings | None,
    Presence | None,
    RejectedMessage | None,
    ReportedResult | ProgressReport | None,  # what a device said of a downlink
    LimitedMessage | None,
]


class UplinkConsumer:
    """Turns one received uplink message into its `Message`.

    Single-threaded by design (one event loop), like its rate limiters. Every
    message takes one token of its device's bucket (a batch too). With
    `limit_by_sent_time`, telemetry takes its token at the time it was sent
    (_sent_at): a broker delivering a backlog at once after an outage does not
    get the device punished. HTTP has no such queue and judges on arrival.
    Other uplinks carry no time: they are limited on arrival by `presence_limiter`,
    in buckets of their own.
    """

    __slots__ = ("_by_sent_time", "_limits", "_presence_limiter", "_rate_limiter")

    def __init__(
        self,
        *,
        limits: DecodeLimits,
        rate_limiter: DeviceRateLimiter | None = None,
        presence_limiter: DeviceRateLimiter | None = None,
        limit_by_sent_time: bool = True,
    ) -> None:
        self._limits = limits
        self._rate_limiter = rate_limiter
        self._presence_limiter = presence_limiter
        self._by_sent_time = limit_by_sent_time

    def consume(
        self, device_id: str, kind: Uplink, topic: str, payload: bytes, received_at: datetime
    ) -> Message:
        """What `payload`, received from `device_id` as `kind` under `topic`, becomes."""
        if kind is Uplink.TELEMETRY:
            return self._telemetry(device_id, topic, payload, received_at)
        presence_limiter = self._presence_limiter
        if presence_limiter is not None and not presence_limiter.allow(
            device_id, received_at.timestamp()
        ):
            return self.reject(topic, device_id, payload, received_at, presence_limiter.rejection())
        limits = self._limits
        if kind is Uplink.STATUS:
            status = decode_status(payload, device_id=device_id, limits=limits)
            if isinstance(status, Rejection):
                return self.reject(topic, device_id, payload, received_at, status)
            reported = ConnectionStatus.ONLINE if status.online else ConnectionStatus.OFFLINE
            presence = Presence(
                device_id,
                received_at,
                reported=reported,
                firmware_version=status.firmware_version,
                attributes=status.attributes,
                config_version=status.config_version,
            )
            return (topic, payload, None, presence, None, None, None)
        if kind is Uplink.HEARTBEAT:
            if len(payload) > limits.max_payload_bytes:
                return self.reject(
                    topic,
                    device_id,
                    payload,
                    received_at,
                    Rejection(RejectReason.TOO_LARGE, "heartbeat payload is too large"),
                )
            return (topic, payload, None, Presence(device_id, received_at), None, None, None)
        if kind is Uplink.OTA_PROGRESS:
            progress = decode_ota_progress(payload, device_id=device_id, limits=limits)
            if isinstance(progress, Rejection):
                return self.reject(topic, device_id, payload, received_at, progress)
            report = ProgressReport(
                device_id,
                received_at,
                topic,
                payload,
                progress.rollout_id,
                progress.version,
                progress.state,
                progress.progress,
                progress.error,
            )
            return (topic, payload, None, Presence(device_id, received_at), None, report, None)
        answer = decode_command_result(payload, device_id=device_id, limits=limits)
        if isinstance(answer, Rejection):
            return self.reject(topic, device_id, payload, received_at, answer)
        # The writer closes the command, or keeps the result as rejected if none is open.
        result = ReportedResult(device_id, received_at, topic, payload, answer)
        return (topic, payload, None, Presence(device_id, received_at), None, result, None)

    def _telemetry(
        self, device_id: str, topic: str, payload: bytes, received_at: datetime
    ) -> Message:
        outcome = decode_telemetry(
            payload, device_id=device_id, received_at=received_at, limits=self._limits
        )
        if isinstance(outcome, Rejection):
            return self.reject(topic, device_id, payload, received_at, outcome)
        readings = DeviceReadings(device_id, received_at, outcome)
        limiter = self._rate_limiter
        if limiter is not None:
            received = received_at.timestamp()
            if not limiter.allow(
                device_id, _sent_at(outcome, received) if self._by_sent_time else received
            ):
                # Rejected unless the ledger shows a redelivery: the writer tells.
                rejection = limiter.rejection()
                rejected = RejectedMessage(
                    received_at,
                    device_id,
                    topic,
                    rejection.reason.value,
                    rejection.detail,
                    payload,
                )
                limited = LimitedMessage(readings, rejected)
                return (topic, payload, None, Presence(device_id, received_at), None, None, limited)
        presence = Presence(device_id, received_at, firmware_version=reported_firmware(outcome))
        return (topic, payload, readings, presence, None, None, None)

    def reject(
        self,
        topic: str,
        device_id: str | None,
        payload: bytes,
        received_at: datetime,
        rejection: Rejection,
    ) -> Message:
        """A rejection, kept with its reason; counted once kept (at the commit)."""
        reason = rejection.reason
        # A device over its rate limit would otherwise log a line per message it floods
        # with; the metric and the rejected store already show every one.
        log.log(
            logging.DEBUG if reason is RejectReason.RATE_LIMITED else logging.INFO,
            "message rejected",
            extra={"device_id": device_id, "topic": topic, "reason": reason.value},
        )
        rejected = RejectedMessage(
            received_at, device_id, topic, reason.value, rejection.detail, payload
        )
        presence = Presence(device_id, received_at) if device_id else None
        return (topic, payload, None, presence, rejected, None, None)


def _sent_at(readings: list[Reading], received: float) -> float:
    """When a telemetry message was sent, for its rate limit (epoch seconds).

    Its newest reading's time, as the device stamped it, but never after it
    arrived nor more than SENT_AT_WINDOW_SECONDS before: a device whose clock
    jumped back is judged on arrival time after that long, not held for ever.
    The limiter also never lets a device's time run backwards, so older
    readings sent after newer ones (a buffer flushed) count as sent with them.
    """
    newest = max(reading.time for reading in readings).timestamp()
    return max(min(newest, received), received - SENT_AT_WINDOW_SECONDS)


def decode_limits(max_payload_bytes: int, max_future_skew_seconds: float) -> DecodeLimits:
    return DecodeLimits(
        max_payload_bytes=max_payload_bytes,
        max_future_skew=timedelta(seconds=max_future_skew_seconds),
    )


def batch_of(messages: list[Message]) -> Batch:
    """The writer's batch for `messages`, built in one pass."""
    batch = Batch()
    for _, _, telemetry, presence, rejected, command_result, limited in messages:
        if telemetry is not None:
            batch.telemetry.append(telemetry)
        if presence is not None:
            batch.presence.append(presence)
        if rejected is not None:
            batch.rejected.append(rejected)
        if isinstance(command_result, ReportedResult):
            batch.command_results.append(command_result)
        elif command_result is not None:
            batch.ota_progress.append(command_result)
        if limited is not None:
            batch.limited.append(limited)
    return batch


def kept_as_unstorable(message: Message, detail: str) -> Batch:
    """The message the database refused, as a rejection: raw bytes, device, topic, reason.

    Its own presence is left out too (its status may be what was refused); the
    writer makes the text of a rejection storable, and bytes are always storable.
    """
    topic, payload, telemetry, presence, rejected, _, _ = message
    device_id: str | None = None
    received_at = datetime.now(UTC)
    if presence is not None:  # every message from a device has one: it was heard from
        device_id, received_at = presence.device_id, presence.seen_at
    elif rejected is not None:
        device_id, received_at = rejected.device_id, rejected.received_at
    elif telemetry is not None:
        device_id, received_at = telemetry.device_id, telemetry.received_at
    log.warning(
        "message refused by the database; kept as rejected",
        extra={"device_id": device_id, "topic": topic, "error": detail},
    )
    reason = RejectReason.UNSTORABLE.value
    return Batch(rejected=[RejectedMessage(received_at, device_id, topic, reason, detail, payload)])
