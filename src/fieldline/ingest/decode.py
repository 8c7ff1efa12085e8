"""Turn uplink payloads into domain values (SPEC §2). Pure: no I/O, no clock reads.

Every payload form is accepted: an object with `sensors`, a flat object of
readings, `{"readings": [...]}` and a JSON array. A message is accepted or
rejected whole, so a rejected batch can be reprocessed from the rejected store
exactly as it arrived.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

from fieldline.domain.commands import (
    RESULT_STATUSES,
    CommandResult,
    CommandStatus,
    NonFiniteJsonError,
    UnstorableJsonError,
    encode_json,
)
from fieldline.domain.firmware import PROGRESS_STATES, Progress
from fieldline.domain.readings import (
    Reading,
    Rejection,
    RejectReason,
    StatusReport,
    storable,
)

# Ids derived from a message's content when it has none of its own (see decode_telemetry).
CONTENT_ID_PREFIX = "~"
RESERVED_KEYS = frozenset({"message_id", "device_id", "timestamp", "sensors", "readings"})
MAX_KEY_LENGTH = 128
MAX_BATCH_READINGS = 10_000
MAX_NESTING = 4
# Rollups add values up in float8: past this, an hour of them could overflow its sum,
# which PostgreSQL refuses. No instrument reads anywhere near it.
MAX_MAGNITUDE = 1e250
# Epoch values above this are milliseconds: 1e11 seconds is the year 5138.
MILLISECONDS_THRESHOLD = 1e11
# Tuples, not `int | float`: a union in isinstance() is built anew at every call,
# and these checks run for every value of every message.
_NUMBER = (int, float)
_ID = (str, int)
# Device clocks that never synced report 1970; such times are refused, not stored.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
# What a name must not contain (Unicode categories): controls, format characters (among
# them the bidi controls U+202A-U+202E and U+2066-U+2069, and the zero-width U+200B-U+200D,
# U+2060 and U+FEFF), surrogates, line and paragraph separators. They make two names
# that differ look the same, or reorder the text shown around them.
_NAME_FORBIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    max_payload_bytes: int
    max_future_skew: timedelta


class _Rejected(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


def decode_telemetry(
    payload: bytes, *, device_id: str, received_at: datetime, limits: DecodeLimits
) -> list[Reading] | Rejection:
    """Decode one telemetry message of `device_id` (the authenticated publisher)."""
    try:
        document = _parse(payload, limits)
        entries = _entries(document)
        base_id = document.get("message_id") if isinstance(document, dict) else None
        readings = []
        digest = ""
        for index, entry in enumerate(entries):
            fallback_id = f"{base_id}#{index}" if isinstance(base_id, str) and base_id else None
            if fallback_id is None and entry.get("timestamp") is not None:
                # No id, but stamped by the device: the same bytes are the same readings,
                # so a redelivery is recognised by its content.
                digest = digest or hashlib.blake2b(payload, digest_size=16).hexdigest()
                fallback_id = f"{CONTENT_ID_PREFIX}{digest}#{index}"
            readings.append(_reading(entry, device_id, received_at, limits, fallback_id))
    except _Rejected as rejected:
        return rejected.rejection
    return readings


def reported_firmware(readings: list[Reading]) -> str | None:
    """The firmware version a telemetry message reports: its last reading's that has one."""
    for reading in reversed(readings):
        firmware = reading.attributes.get("firmware_version")
        if firmware is not None:
            return firmware
    return None


def decode_status(
    payload: bytes, *, device_id: str, limits: DecodeLimits
) -> StatusReport | Rejection:
    """Decode a status message: `{"status": "online"|"offline", ...}` or the bare word."""
    try:
        text = payload.strip().lower()
        if text in (b"online", b"offline"):
            return StatusReport(online=text == b"online", attributes={}, firmware_version=None)
        document = _parse(payload, limits)
        if not isinstance(document, dict):
            raise _Rejected(RejectReason.INVALID_PAYLOAD, "status must be a JSON object")
        _check_device(document, device_id)
        status = document.get("status")
        if status not in ("online", "offline"):
            raise _Rejected(
                RejectReason.INVALID_PAYLOAD, 'status must have "status": "online" or "offline"'
            )
        attributes: dict[str, str] = {}
        metrics: dict[str, float] = {}
        _collect(document, metrics, attributes, prefix="", depth=0, skip=_STATUS_OWN_KEYS)
        attributes.update({name: _format_number(value) for name, value in metrics.items()})
        firmware = document.get("firmware_version")
        return StatusReport(
            online=status == "online",
            attributes=attributes,
            firmware_version=firmware if isinstance(firmware, str) else None,
            config_version=_config_version(document.get("config_version")),
        )
    except _Rejected as rejected:
        return rejected.rejection


def decode_command_result(
    payload: bytes, *, device_id: str, limits: DecodeLimits
) -> CommandResult | Rejection:
    """Decode a device's answer: `{"command_id", "status": "succeeded"|"failed", "result"}`.

    Whether the command exists and is open is for the writer to tell.
    """
    try:
        document = _parse(payload, limits)
        if not isinstance(document, dict):
            raise _Rejected(RejectReason.INVALID_PAYLOAD, "a command result must be a JSON object")
        _check_device(document, device_id)
        raw_id = document.get("command_id")
        try:
            command_id = UUID(raw_id) if isinstance(raw_id, str) else None
        except ValueError:
            command_id = None
        if command_id is None:
            raise _Rejected(
                RejectReason.INVALID_PAYLOAD, "command_id must be the UUID of the command answered"
            )
        status = document.get("status")
        if status not in RESULT_STATUSES:
            raise _Rejected(RejectReason.INVALID_PAYLOAD, 'status must be "succeeded" or "failed"')
        result = document.get("result")
        try:
            encode_json(result)  # kept as jsonb, which refuses what this refuses
        except NonFiniteJsonError as exc:
            raise _Rejected(RejectReason.NON_FINITE_VALUE, f"result: {exc}") from exc
        except UnstorableJsonError as exc:
            raise _Rejected(RejectReason.INVALID_PAYLOAD, f"result: {exc}") from exc
        # jsonb refuses lone surrogates too, which encode_json writes as escapes.
        if not storable(json.dumps(result, ensure_ascii=False)):
            raise _Rejected(RejectReason.INVALID_PAYLOAD, f"result {_UNSTORABLE_TEXT}")
        return CommandResult(command_id, CommandStatus(status), result)
    except _Rejected as rejected:
        return rejected.rejection


MAX_PROGRESS_ERROR_CHARS = 1000


def decode_ota_progress(
    payload: bytes, *, device_id: str, limits: DecodeLimits
) -> Progress | Rejection:
    """Decode an OTA progress report: `{"rollout_id", "version", "state", "progress",
    "error"}`. Whether the device's update is under way is for the writer to tell."""
    try:
        document = _parse(payload, limits)
        if not isinstance(document, dict):
            raise _Rejected(
                RejectReason.INVALID_PAYLOAD, "an OTA progress report must be an object"
            )
        _check_device(document, device_id)
        rollout_id = document.get("rollout_id")
        if isinstance(rollout_id, bool) or not isinstance(rollout_id, int) or rollout_id < 1:
            raise _Rejected(RejectReason.INVALID_PAYLOAD, "rollout_id must be the rollout's id")
        version = document.get("version")
        if not isinstance(version, str) or not version or not storable(version):
            raise _Rejected(RejectReason.INVALID_PAYLOAD, "version must be the version installed")
        state = document.get("state")
        if state not in PROGRESS_STATES:
            raise _Rejected(
                RejectReason.INVALID_PAYLOAD, f"state must be one of {', '.join(PROGRESS_STATES)}"
            )
        progress = document.get("progress")
        if progress is not None and (
            isinstance(progress, bool)
            or not isinstance(progress, int | float)
            or not 0 <= progress <= 100
        ):
            raise _Rejected(RejectReason.INVALID_PAYLOAD, "progress must be a percentage, 0 to 100")
        error = document.get("error")
        if error is not None and not (isinstance(error, str) and storable(error)):
            raise _Rejected(RejectReason.INVALID_PAYLOAD, "error must be text")
        return Progress(
            rollout_id,
            version,
            state,
            None if progress is None else int(progress),
            None if error is None else error[:MAX_PROGRESS_ERROR_CHARS],
        )
    except _Rejected as rejected:
        return rejected.rejection


# `config_version` has a column of its own (the devices table), not an attribute.
_STATUS_OWN_KEYS = RESERVED_KEYS | {"status", "config_version"}
_MAX_CONFIG_VERSION = 2**63 - 1


def _config_version(value: Any) -> int | None:
    """The applied configuration version: a whole number (3 or 3.0); null means none.

    Anything else rejects the status message, so a firmware bug shows in the
    rejected store instead of the device looking out of sync for ever.
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not value.is_integer())
        or not 0 <= value <= _MAX_CONFIG_VERSION
    ):
        raise _Rejected(
            RejectReason.INVALID_PAYLOAD,
            f"config_version must be a whole number from 0, not {str(value)[:32]!r}",
        )
    return int(value)


def _parse(payload: bytes, limits: DecodeLimits) -> Any:
    if len(payload) > limits.max_payload_bytes:
        raise _Rejected(
            RejectReason.TOO_LARGE,
            f"payload is {len(payload)} bytes; the limit is {limits.max_payload_bytes}",
        )
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN/Infinity and integers beyond 64 bits, which the
        # standard parser reads; its result then goes through the same checks,
        # so NaN is rejected as a non-finite value rather than as bad JSON.
        try:
            return json.loads(payload)
        except (ValueError, RecursionError):
            raise _Rejected(RejectReason.INVALID_JSON, f"not valid JSON: {exc}") from exc


def _entries(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, list):
        entries: Any = document
    elif isinstance(document, dict) and "readings" in document:
        entries = document["readings"]
        if not isinstance(entries, list):
            raise _Rejected(RejectReason.INVALID_PAYLOAD, '"readings" must be an array')
    elif isinstance(document, dict):
        entries = [document]
    else:
        raise _Rejected(
            RejectReason.INVALID_PAYLOAD, "telemetry must be a JSON object or an array of objects"
        )
    if not entries:
        raise _Rejected(RejectReason.NO_READINGS, "the batch is empty")
    if len(entries) > MAX_BATCH_READINGS:
        raise _Rejected(
            RejectReason.INVALID_PAYLOAD, f"a batch holds at most {MAX_BATCH_READINGS} readings"
        )
    if not all(isinstance(entry, dict) for entry in entries):
        raise _Rejected(RejectReason.INVALID_PAYLOAD, "every reading must be a JSON object")
    checked: list[dict[str, Any]] = entries
    return checked


def _check_device(entry: dict[str, Any], device_id: str) -> None:
    claimed = entry.get("device_id")
    if claimed is not None and claimed != device_id:
        raise _Rejected(
            RejectReason.DEVICE_MISMATCH,
            f"device_id {str(claimed)[:MAX_KEY_LENGTH]!r} does not match the "
            f"authenticated device {device_id!r}",
        )


def _reading(
    entry: dict[str, Any],
    device_id: str,
    received_at: datetime,
    limits: DecodeLimits,
    fallback_id: str | None,
) -> Reading:
    _check_device(entry, device_id)
    message_id = entry.get("message_id", fallback_id)
    if message_id is not None and (
        not isinstance(message_id, str | int) or message_id == "" or isinstance(message_id, bool)
    ):
        raise _Rejected(RejectReason.INVALID_PAYLOAD, "message_id must be a non-empty string")
    if (
        isinstance(message_id, str)
        and ("\x00" in message_id or not message_id.isascii())
        and not storable(message_id)
    ):
        raise _Rejected(
            RejectReason.INVALID_TEXT, f"message_id {_shown(message_id)} {_UNSTORABLE_TEXT}"
        )
    time = _timestamp(entry.get("timestamp"), received_at, limits)
    metrics: dict[str, float] = {}
    attributes: dict[str, str] = {}
    sensors = entry.get("sensors")
    if sensors is not None:
        if not isinstance(sensors, dict):
            raise _Rejected(RejectReason.INVALID_PAYLOAD, '"sensors" must be an object')
        _collect(sensors, metrics, attributes, prefix="", depth=0, skip=frozenset())
    _collect(entry, metrics, attributes, prefix="", depth=0, skip=RESERVED_KEYS)
    if not metrics and not attributes:
        raise _Rejected(RejectReason.NO_READINGS, "the message has no readings")
    return Reading(
        message_id=str(message_id)[:256] if message_id is not None else None,
        time=time,
        metrics=metrics,
        attributes=attributes,
    )


def _collect(
    source: dict[str, Any],
    metrics: dict[str, float],
    attributes: dict[str, str],
    *,
    prefix: str,
    depth: int,
    skip: frozenset[str],
) -> None:
    """Numbers and booleans become metrics, strings attributes; objects nest with dots."""
    for key, value in source.items():
        if key in skip or value is None:
            continue
        if key not in _VALID_NAMES:
            _check_name(key)
        name = f"{prefix}{key}"
        if len(name) > MAX_KEY_LENGTH:
            raise _Rejected(
                RejectReason.INVALID_PAYLOAD,
                f"reading names must be 1 to {MAX_KEY_LENGTH} characters",
            )
        if isinstance(value, bool):
            metrics[name] = 1.0 if value else 0.0
        elif isinstance(value, int | float):
            try:
                number = float(value)
            except OverflowError:  # an integer of hundreds of digits, from the fallback parser
                number = math.inf
            if not -MAX_MAGNITUDE <= number <= MAX_MAGNITUDE:
                _refuse_number(name, number)
            metrics[name] = number
        elif isinstance(value, str):
            if not storable(value):
                raise _Rejected(RejectReason.INVALID_TEXT, f"{name}: the value {_UNSTORABLE_TEXT}")
            attributes[name] = value
        elif isinstance(value, dict):
            if depth >= MAX_NESTING:
                raise _Rejected(RejectReason.INVALID_PAYLOAD, f"{name} is nested too deeply")
            _collect(
                value, metrics, attributes, prefix=f"{name}.", depth=depth + 1, skip=frozenset()
            )
        else:
            attributes[name] = _json_text(name, value)


_UNSTORABLE_TEXT = "holds a NUL character or an unpaired surrogate, which cannot be stored"


def _shown(text: str) -> str:
    """A name or id as a rejection's detail quotes it: escaped, and not too long."""
    return repr(text[:MAX_KEY_LENGTH])


# Names found valid: a fleet repeats the same few, so each is checked once per process.
# Bounded: past this many, further names are checked every time.
_VALID_NAMES: set[str] = set()
_MAX_VALID_NAMES = 65_536


def _check_name(key: str) -> None:
    """Refuse a name that is blank or holds characters that disguise it (_NAME_FORBIDDEN)."""
    if not key or key.isspace():
        raise _Rejected(RejectReason.INVALID_NAME, f"reading name {_shown(key)} is blank")
    # isprintable() is one pass in C, true for almost every real name; it is false for
    # every forbidden character, and for a few allowed ones (a no-break space, say).
    if not key.isprintable():
        for char in key:
            if unicodedata.category(char) in _NAME_FORBIDDEN:
                raise _Rejected(
                    RejectReason.INVALID_NAME,
                    f"reading name {_shown(key)} holds U+{ord(char):04X}, a control, format "
                    "or separator character (names are shown as they are: no invisible "
                    "characters)",
                )
    if len(_VALID_NAMES) < _MAX_VALID_NAMES:
        _VALID_NAMES.add(key)


def _refuse_number(name: str, number: float) -> None:
    if not math.isfinite(number):
        raise _Rejected(RejectReason.NON_FINITE_VALUE, f"{name} is not a finite number")
    raise _Rejected(
        RejectReason.INVALID_PAYLOAD,
        f"{name} is {number:.3g}; values must be within ±{MAX_MAGNITUDE:.0e}",
    )


def _json_text(name: str, value: Any) -> str:
    """An array value, kept as an attribute in its JSON text."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        pass  # what orjson refuses to write: integers past 64 bits, lone surrogates, depth
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError) as exc:
        raise _Rejected(RejectReason.INVALID_PAYLOAD, f"{name} is nested too deeply") from exc
    if not storable(text):
        raise _Rejected(RejectReason.INVALID_TEXT, f"{name}: the value {_UNSTORABLE_TEXT}")
    return text


def _timestamp(value: Any, received_at: datetime, limits: DecodeLimits) -> datetime:
    if value is None:
        return received_at
    if isinstance(value, bool):
        raise _Rejected(RejectReason.INVALID_TIMESTAMP, "timestamp must be a number or a string")
    try:
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise _Rejected(RejectReason.NON_FINITE_VALUE, "timestamp is not finite")
            seconds = value / 1000 if abs(value) >= MILLISECONDS_THRESHOLD else value
            time = datetime.fromtimestamp(seconds, tz=UTC)
        elif isinstance(value, str):
            time = datetime.fromisoformat(value)
            if time.tzinfo is None:
                time = time.replace(tzinfo=UTC)
            time = time.astimezone(UTC)
        else:
            raise _Rejected(
                RejectReason.INVALID_TIMESTAMP,
                "timestamp must be epoch seconds, milliseconds or ISO 8601",
            )
    except (ValueError, OverflowError, OSError) as exc:
        raise _Rejected(
            RejectReason.INVALID_TIMESTAMP, f"timestamp {str(value)[:64]!r} is not a valid time"
        ) from exc
    if time > received_at + limits.max_future_skew:
        raise _Rejected(
            RejectReason.FUTURE_TIMESTAMP, f"timestamp {time.isoformat()} is in the future"
        )
    if time < EARLIEST_TIME:
        raise _Rejected(
            RejectReason.INVALID_TIMESTAMP,
            f"timestamp {time.isoformat()} is before 2000 (clock not set?)",
        )
    return time


def _format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
