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
    INVALID_NAME = "invalid_name"  # a metric or attribute name that is blank or deceptive
    INVALID_TEXT = "invalid_text"  # text PostgreSQL cannot store: NUL, an unpaired surrogate
    NO_READINGS = "no_readings"
    UNKNOWN_TOPIC = "unknown_topic"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_COMMAND = "unknown_command"  # a result for no command of this device
    COMMAND_CLOSED = "command_closed"  # a result for a command already answered or expired
    NO_UPDATE = "no_update"  # OTA progress for no update under way for the device
    # The database refused to store it: the check of last resort, after decoding let it by.
    UNSTORABLE = "unstorable"


def storable(text: str) -> bool:
    """Whether PostgreSQL's `text` can hold `text`: no NUL, and valid UTF-8.

    JSON can spell both (`\\u0000`, and a lone surrogate escape such as `\\ud800`,
    which Python's reader turns into a character UTF-8 cannot encode).
    """
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def storable_copy(text: str) -> str:
    """`text` with what PostgreSQL cannot store spelt out as escapes (for reasons and topics)."""
    if storable(text):
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()


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
