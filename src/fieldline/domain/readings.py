"""Readings and rejections: what an uplink message becomes after decoding."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class RejectReason(StrEnum):
    """Why an uplink message was not stored; each is a label of the rejected metric."""

    INVALID_JSON = "invalid_json"
    TOO_LARGE = "too_large"
    DEVICE_MISMATCH = "device_mismatch"
    NON_FINITE_VALUE = "non_finite_value"
    FUTURE_TIMESTAMP = "future_timestamp"
    INVALID_TIMESTAMP = "invalid_timestamp"
    INVALID_PAYLOAD = "invalid_payload"
    NO_READINGS = "no_readings"
    UNKNOWN_TOPIC = "unknown_topic"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_COMMAND = "unknown_command"  # a result for no command of this device
    COMMAND_CLOSED = "command_closed"  # a result for a command already answered or expired


@dataclass(frozen=True, slots=True)
class Reading:
    """One timestamped set of readings from one device (one element of a batch)."""

    message_id: str | None
    time: datetime
    metrics: dict[str, float]
    attributes: dict[str, str]


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class StatusReport:
    """A device's own account of itself on the status topic (or its last will)."""

    online: bool
    attributes: dict[str, str]
    firmware_version: str | None
    config_version: int | None = None  # the desired-configuration version the device applied
