"""Decoding a device's answer to a command (pure: no database, no clock)."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest

from fieldline.domain.commands import CommandResult, CommandStatus
from fieldline.domain.readings import Rejection, RejectReason
from fieldline.ingest.decode import DecodeLimits, decode_command_result

LIMITS = DecodeLimits(max_payload_bytes=1024, max_future_skew=timedelta(minutes=5))
COMMAND = UUID("7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f")


def decode(payload: bytes) -> CommandResult | Rejection:
    return decode_command_result(payload, device_id="dev-1", limits=LIMITS)


@pytest.mark.parametrize(
    ("payload", "status", "result"),
    [
        (
            b'{"command_id": "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f", "status": "succeeded",'
            b' "result": {"uptime": 12, "log": ["a", null]}}',
            CommandStatus.SUCCEEDED,
            {"uptime": 12, "log": ["a", None]},
        ),
        (
            b'{"command_id": "7D6F1BFA-3F09-4B8A-9F6C-1B2A3C4D5E6F", "status": "failed",'
            b' "device_id": "dev-1"}',
            CommandStatus.FAILED,
            None,
        ),
        (
            b'{"command_id": "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f", "status": "failed",'
            b' "result": "flash write error"}',
            CommandStatus.FAILED,
            "flash write error",
        ),
    ],
)
def test_answers_decode(payload: bytes, status: CommandStatus, result: object) -> None:
    assert decode(payload) == CommandResult(COMMAND, status, result)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", RejectReason.INVALID_JSON),
        (b"succeeded", RejectReason.INVALID_JSON),
        (b'{"command_id": "' + b"x" * 1100 + b'"}', RejectReason.TOO_LARGE),
        (b"[]", RejectReason.INVALID_PAYLOAD),
        (b'"7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f"', RejectReason.INVALID_PAYLOAD),
        (b'{"status": "succeeded"}', RejectReason.INVALID_PAYLOAD),
        (b'{"command_id": 42, "status": "succeeded"}', RejectReason.INVALID_PAYLOAD),
        (b'{"command_id": "not-a-uuid", "status": "succeeded"}', RejectReason.INVALID_PAYLOAD),
        (
            b'{"command_id": "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f"}',
            RejectReason.INVALID_PAYLOAD,
        ),
        (
            b'{"command_id": "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f", "status": "pending"}',
            RejectReason.INVALID_PAYLOAD,
        ),
        (
            b'{"command_id": "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f", "status": ["succeeded"]}',
            RejectReason.INVALID_PAYLOAD,
        ),
        (
            b'{"command_id": "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f", "status": "failed",'
            b' "device_id": "dev-2"}',
            RejectReason.DEVICE_MISMATCH,
        ),
        (
            b'{"command_id": "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f", "status": "failed",'
            b' "result": [1, Infinity]}',
            RejectReason.NON_FINITE_VALUE,
        ),
        (
            b'{"command_id": "7d6f1bfa-3f09-4b8a-9f6c-1b2a3c4d5e6f", "status": "failed",'
            b' "result": {"k\\u0000": 1}}',
            RejectReason.INVALID_PAYLOAD,
        ),
    ],
)
def test_malformed_answers_are_rejected_with_a_reason(payload: bytes, reason: RejectReason) -> None:
    outcome = decode(payload)
    assert isinstance(outcome, Rejection), outcome
    assert outcome.reason is reason
    assert outcome.detail
