from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fieldline.domain.readings import Reading, Rejection, RejectReason
from fieldline.ingest.decode import DecodeLimits, decode_status, decode_telemetry

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LIMITS = DecodeLimits(max_payload_bytes=1024, max_future_skew=timedelta(minutes=5))


def decode(payload: bytes, device_id: str = "dev-1") -> list[Reading] | Rejection:
    return decode_telemetry(payload, device_id=device_id, received_at=NOW, limits=LIMITS)


def readings(payload: bytes) -> list[Reading]:
    result = decode(payload)
    assert isinstance(result, list), result
    return result


def rejection(payload: bytes, device_id: str = "dev-1") -> RejectReason:
    result = decode(payload, device_id)
    assert isinstance(result, Rejection), result
    return result.reason


def test_full_message_splits_metrics_and_attributes() -> None:
    [r] = readings(
        b'{"message_id": "m1", "device_id": "dev-1", "timestamp": 1764072000,'
        b' "sensors": {"temperature": 22.5, "door_open": true, "mode": "eco"},'
        b' "firmware_version": "v0.2.1", "signal_strength": -67}'
    )
    assert r.message_id == "m1"
    assert r.time == datetime(2025, 11, 25, 12, 0, tzinfo=UTC)
    assert r.metrics == {"temperature": 22.5, "door_open": 1.0, "signal_strength": -67.0}
    assert r.attributes == {"mode": "eco", "firmware_version": "v0.2.1"}


def test_flat_object_and_nested_values() -> None:
    [r] = readings(b'{"temp": 22.5, "humidity": 45, "gps": {"lat": 52.1, "lon": 4.3}}')
    assert r.metrics == {"temp": 22.5, "humidity": 45.0, "gps.lat": 52.1, "gps.lon": 4.3}
    assert r.time == NOW  # no timestamp: time of receipt
    assert r.message_id is None


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        (b"1764072000", datetime(2025, 11, 25, 12, 0, tzinfo=UTC)),
        (b"1764072000123", datetime(2025, 11, 25, 12, 0, 0, 123000, tzinfo=UTC)),
        (b'"2025-11-25T12:00:00Z"', datetime(2025, 11, 25, 12, 0, tzinfo=UTC)),
        (b'"2025-11-25T13:00:00+01:00"', datetime(2025, 11, 25, 12, 0, tzinfo=UTC)),
        (b'"2025-11-25T12:00:00"', datetime(2025, 11, 25, 12, 0, tzinfo=UTC)),
    ],
)
def test_timestamp_forms(timestamp: bytes, expected: datetime) -> None:
    [r] = readings(b'{"t": 1, "timestamp": ' + timestamp + b"}")
    assert r.time == expected


def test_batches_in_both_forms() -> None:
    batch = (
        b'[{"message_id": "a", "timestamp": 1764072000, "t": 1},'
        b' {"message_id": "b", "timestamp": 1764072010, "t": 2}]'
    )
    assert [(r.message_id, r.metrics["t"]) for r in readings(batch)] == [("a", 1.0), ("b", 2.0)]
    wrapped = b'{"message_id": "w", "readings": [{"t": 1}, {"t": 2, "message_id": "own"}]}'
    assert [r.message_id for r in readings(wrapped)] == ["w#0", "own"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", RejectReason.INVALID_JSON),
        (b"\xff\xfe\x00", RejectReason.INVALID_JSON),
        (b'{"t": NaN}', RejectReason.NON_FINITE_VALUE),
        (b'{"sensors": {"t": Infinity}}', RejectReason.NON_FINITE_VALUE),
        (b'{"t": 1e999}', RejectReason.NON_FINITE_VALUE),
        (b'{"t": 1, "timestamp": 4102444800}', RejectReason.FUTURE_TIMESTAMP),
        (b'{"t": 1, "timestamp": 12345}', RejectReason.INVALID_TIMESTAMP),
        (b'{"t": 1, "timestamp": "yesterday"}', RejectReason.INVALID_TIMESTAMP),
        (b'{"t": 1, "timestamp": true}', RejectReason.INVALID_TIMESTAMP),
        (b'{"device_id": "dev-2", "t": 1}', RejectReason.DEVICE_MISMATCH),
        (b'[{"t": 1}, {"device_id": "dev-2", "t": 1}]', RejectReason.DEVICE_MISMATCH),
        (b'{"readings": []}', RejectReason.NO_READINGS),
        (b'{"message_id": "x"}', RejectReason.NO_READINGS),
        (b'"a string"', RejectReason.INVALID_PAYLOAD),
        (b'{"readings": {"t": 1}}', RejectReason.INVALID_PAYLOAD),
        (b'{"sensors": [1, 2]}', RejectReason.INVALID_PAYLOAD),
        (b"[1, 2]", RejectReason.INVALID_PAYLOAD),
        (b'{"t": 1, "message_id": ""}', RejectReason.INVALID_PAYLOAD),
        (b'{"t": "' + b"x" * 2000 + b'"}', RejectReason.TOO_LARGE),
    ],
)
def test_rejections(payload: bytes, reason: RejectReason) -> None:
    assert rejection(payload) is reason


def test_a_bad_reading_rejects_the_whole_batch() -> None:
    assert rejection(b'[{"t": 1}, {"t": 2, "timestamp": 4102444800}]') is (
        RejectReason.FUTURE_TIMESTAMP
    )


def test_deep_nesting_is_refused_not_a_crash() -> None:
    assert rejection(b'{"a": ' * 100 + b"1" + b"}" * 100) is RejectReason.INVALID_PAYLOAD


def test_status_forms() -> None:
    online = decode_status(
        b'{"status": "online", "firmware_version": "v2", "uptime_s": 12}',
        device_id="dev-1",
        limits=LIMITS,
    )
    assert not isinstance(online, Rejection)
    assert online.online and online.firmware_version == "v2"
    assert online.attributes == {"firmware_version": "v2", "uptime_s": "12"}
    will = decode_status(b'{"status":"offline"}', device_id="dev-1", limits=LIMITS)
    assert not isinstance(will, Rejection) and not will.online
    bare = decode_status(b"offline", device_id="dev-1", limits=LIMITS)
    assert not isinstance(bare, Rejection) and not bare.online
    bad = decode_status(b'{"status": "sleeping"}', device_id="dev-1", limits=LIMITS)
    assert isinstance(bad, Rejection) and bad.reason is RejectReason.INVALID_PAYLOAD
    spoof = decode_status(
        b'{"status": "online", "device_id": "x"}', device_id="dev-1", limits=LIMITS
    )
    assert isinstance(spoof, Rejection) and spoof.reason is RejectReason.DEVICE_MISMATCH


def test_stamped_readings_without_ids_are_identified_by_content() -> None:
    payload = b'{"readings": [{"timestamp": 1764072000, "t": 1}, {"t": 2}]}'
    first, unstamped = readings(payload)
    # A redelivery of the same bytes gets the same id, so the ledger drops it.
    assert readings(payload)[0].message_id == first.message_id
    assert first.message_id is not None and first.message_id.startswith("~")
    assert first.message_id.endswith("#0")
    # Stamped on arrival, an unstamped reading is new at every delivery: no id is made up.
    assert unstamped.message_id is None
    # Other bytes, other readings.
    other = readings(b'{"readings": [{"timestamp": 1764072000, "t": 3}, {"t": 2}]}')
    assert other[0].message_id != first.message_id
