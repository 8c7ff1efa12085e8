"""The configuration version a device reports in its status message."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fieldline.domain.readings import Rejection, RejectReason, StatusReport
from fieldline.ingest.decode import DecodeLimits, decode_status

LIMITS = DecodeLimits(max_payload_bytes=1024, max_future_skew=timedelta(minutes=5))


def status(payload: bytes) -> StatusReport | Rejection:
    return decode_status(payload, device_id="dev-1", limits=LIMITS)


@pytest.mark.parametrize(
    ("payload", "version"),
    [
        (b'{"status": "online", "config_version": 7}', 7),
        (b'{"status": "online", "config_version": 7.0}', 7),
        (b'{"status": "online", "config_version": 0}', 0),
        (b'{"status": "online", "config_version": null}', None),
        (b'{"status": "online"}', None),
        (b"online", None),
    ],
)
def test_a_whole_number_is_the_applied_version(payload: bytes, version: int | None) -> None:
    report = status(payload)
    assert isinstance(report, StatusReport), report
    assert report.config_version == version
    assert "config_version" not in report.attributes  # a column of its own, not an attribute


@pytest.mark.parametrize(
    "value",
    [b'"7"', b"7.5", b"-1", b"true", b"[7]", b"{}", b"NaN", b"1e400", b"9223372036854775808"],
)
def test_anything_else_rejects_the_status_visibly(value: bytes) -> None:
    report = status(b'{"status": "online", "config_version": ' + value + b"}")
    assert isinstance(report, Rejection), report
    assert report.reason is RejectReason.INVALID_PAYLOAD
    assert "config_version" in report.detail
