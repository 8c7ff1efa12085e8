"""The one consumer, called without a broker, HTTP or database: what each message becomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from fieldline.domain.devices import ConnectionStatus
from fieldline.domain.readings import RejectReason
from fieldline.domain.topics import Uplink
from fieldline.ingest.consumer import (
    Message,
    UplinkConsumer,
    batch_of,
    decode_limits,
    kept_as_unstorable,
)
from fieldline.ingest.ratelimit import DeviceRateLimiter

LIMITS = decode_limits(1024, 300)
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
TOPIC = "devices/dev-1/telemetry"


def consume(consumer: UplinkConsumer, kind: Uplink, payload: bytes) -> Message:
    return consumer.consume("dev-1", kind, f"devices/dev-1/{kind.value}", payload, NOW)


def test_telemetry_becomes_readings_and_presence_with_the_reported_firmware() -> None:
    payload = b'{"message_id": "m1", "temp": 21.5, "firmware_version": "v2"}'
    topic, raw, telemetry, presence, rejected, result, limited = consume(
        UplinkConsumer(limits=LIMITS), Uplink.TELEMETRY, payload
    )
    assert (topic, raw) == (TOPIC, payload)
    assert telemetry is not None
    assert [r.metrics for r in telemetry.readings] == [{"temp": 21.5}]
    assert presence is not None
    assert (presence.device_id, presence.seen_at, presence.firmware_version) == ("dev-1", NOW, "v2")
    assert (rejected, result, limited) == (None, None, None)


def test_a_bad_message_is_kept_with_its_reason_and_the_device_was_heard_from() -> None:
    _, _, telemetry, presence, rejected, _, _ = consume(
        UplinkConsumer(limits=LIMITS), Uplink.TELEMETRY, b"{"
    )
    assert telemetry is None
    assert rejected is not None
    assert (rejected.reason, rejected.device_id, rejected.topic) == ("invalid_json", "dev-1", TOPIC)
    assert rejected.payload == b"{"
    assert presence is not None and presence.seen_at == NOW


def test_status_heartbeat_and_command_result_become_presence_and_results() -> None:
    consumer = UplinkConsumer(limits=LIMITS)
    _, _, _, status, _, _, _ = consume(consumer, Uplink.STATUS, b'{"status": "offline"}')
    assert status is not None and status.reported is ConnectionStatus.OFFLINE
    _, _, _, heard, _, _, _ = consume(consumer, Uplink.HEARTBEAT, b"")
    assert heard is not None and heard.reported is None
    _, _, _, _, too_large, _, _ = consume(consumer, Uplink.HEARTBEAT, b" " * 1025)
    assert too_large is not None and too_large.reason == RejectReason.TOO_LARGE.value
    command = orjson.dumps(
        {"command_id": "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f", "status": "succeeded"}
    )
    _, _, _, presence, _, result, _ = consume(consumer, Uplink.COMMAND_RESULT, command)
    assert result is not None and result.device_id == "dev-1"
    assert presence is not None


def backlog(minutes: int) -> list[bytes]:
    """What a device buffered while offline for `minutes`, one message a minute."""
    start = NOW - timedelta(minutes=minutes)
    return [
        orjson.dumps({"timestamp": (start + timedelta(minutes=n)).isoformat(), "t": n})
        for n in range(minutes)
    ]


def test_a_backlog_is_judged_by_when_it_was_sent_unless_judged_on_arrival() -> None:
    """MQTT's broker delivers a backlog at once: not the device's fault. HTTP has no queue."""
    messages = backlog(30)
    by_sent_time = UplinkConsumer(limits=LIMITS, rate_limiter=DeviceRateLimiter(0.1, 5))
    on_arrival = UplinkConsumer(
        limits=LIMITS, rate_limiter=DeviceRateLimiter(0.1, 5), limit_by_sent_time=False
    )
    sent = [consume(by_sent_time, Uplink.TELEMETRY, p)[6] for p in messages]
    arrived = [consume(on_arrival, Uplink.TELEMETRY, p)[6] for p in messages]
    assert sent.count(None) == 30
    assert arrived.count(None) == 5
    limited = arrived[5]
    assert limited is not None
    assert limited.rejected.reason == RejectReason.RATE_LIMITED.value
    assert limited.rejected.detail == "over 0.1 messages/s per device (burst 5)"
    assert limited.readings.readings[0].metrics == {"t": 5.0}  # kept: it may be a redelivery


def test_presence_uplinks_have_buckets_of_their_own() -> None:
    consumer = UplinkConsumer(
        limits=LIMITS,
        rate_limiter=DeviceRateLimiter(0.1, 1),
        presence_limiter=DeviceRateLimiter(0.1, 1),
    )
    assert consume(consumer, Uplink.TELEMETRY, b'{"t": 1}')[6] is None
    assert consume(consumer, Uplink.HEARTBEAT, b"")[4] is None
    rejected = consume(consumer, Uplink.HEARTBEAT, b"")[4]
    assert rejected is not None and rejected.reason == RejectReason.RATE_LIMITED.value


def test_messages_become_one_batch_and_a_refused_one_its_rejection() -> None:
    consumer = UplinkConsumer(limits=LIMITS)
    good = consume(consumer, Uplink.TELEMETRY, b'{"t": 1}')
    bad = consume(consumer, Uplink.TELEMETRY, b"[")
    status = consume(consumer, Uplink.STATUS, b'{"status": "online"}')
    batch = batch_of([good, bad, status])
    assert (len(batch.telemetry), len(batch.presence), len(batch.rejected)) == (1, 3, 1)

    refused = kept_as_unstorable(good, "value out of range")
    assert refused.presence == [] and refused.telemetry == []
    [kept] = refused.rejected
    assert (kept.reason, kept.detail) == (RejectReason.UNSTORABLE.value, "value out of range")
    assert (kept.device_id, kept.received_at, kept.topic, kept.payload) == (
        "dev-1",
        NOW,
        TOPIC,
        b'{"t": 1}',
    )
