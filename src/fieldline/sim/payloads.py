"""Byte payloads a simulated device publishes, per the device contract (SPEC §2).

Everything is encoded once with orjson into bytes that go straight to the
socket; the load generator must stay cheaper per message than the platform.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum, StrEnum

import orjson

from fieldline.sim.values import Reading

FIRMWARE_VERSION = "v1.2.0"  # what simulated devices run unless told otherwise
DEVICE_TYPE = "sim-sensor"  # their model, for firmware updates
# The platform's default `max_payload_bytes` is 64 KiB; stay clearly above it.
OVERSIZED_PAYLOAD_BYTES = 65_536 + 4_096
FUTURE_SKEW_MS = 86_400_000
WILL_PAYLOAD = orjson.dumps({"status": "offline"})
_NAN_MARKER = "__fieldline_sim_nan__"


class TimestampForm(IntEnum):
    """The three timestamp spellings SPEC §2 accepts; devices rotate through them."""

    EPOCH_SECONDS = 0
    EPOCH_MILLISECONDS = 1
    ISO_8601 = 2


class BadKind(StrEnum):
    """Malformed telemetry the platform must reject with a reason, never drop or crash on."""

    NOT_JSON = "not_json"
    NAN_VALUE = "nan_value"
    FUTURE_TIMESTAMP = "future_timestamp"
    SPOOFED_DEVICE_ID = "spoofed_device_id"
    OVERSIZED = "oversized"


BAD_KINDS: tuple[BadKind, ...] = tuple(BadKind)


def encode_timestamp(timestamp_ms: int, form: TimestampForm) -> int | float | str:
    if form is TimestampForm.EPOCH_SECONDS:
        # Fractional seconds keep two readings of one device within a second distinct.
        return timestamp_ms / 1000.0
    if form is TimestampForm.EPOCH_MILLISECONDS:
        return timestamp_ms
    moment = datetime.fromtimestamp(timestamp_ms / 1000.0, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reading_object(
    reading: Reading,
    *,
    device_id: str,
    message_id: str,
    form: TimestampForm,
    firmware_version: str = FIRMWARE_VERSION,
) -> dict[str, object]:
    return {
        "message_id": message_id,
        "device_id": device_id,
        "timestamp": encode_timestamp(reading.timestamp_ms, form),
        "sensors": reading.sensors(),
        "firmware_version": firmware_version,
        "signal_strength": reading.signal_strength,
    }


def telemetry(obj: dict[str, object]) -> bytes:
    return orjson.dumps(obj)


def batch(objs: list[dict[str, object]]) -> bytes:
    return orjson.dumps({"readings": objs})


def bad_telemetry(
    kind: BadKind,
    reading: Reading,
    *,
    device_id: str,
    message_id: str,
    spoof_as: str,
) -> bytes:
    """A payload the platform must reject for the reason `kind` names."""
    obj = reading_object(
        reading, device_id=device_id, message_id=message_id, form=TimestampForm.EPOCH_SECONDS
    )
    if kind is BadKind.NOT_JSON:
        # A firmware buffer cut short mid-write: the most common garbage seen in practice.
        whole = orjson.dumps(obj)
        return whole[: len(whole) // 2]
    if kind is BadKind.NAN_VALUE:
        # orjson cannot emit NaN (it writes null), so splice the bare literal in.
        sensors = {**reading.sensors(), "temperature": _NAN_MARKER}
        raw = orjson.dumps({**obj, "sensors": sensors})
        return raw.replace(f'"{_NAN_MARKER}"'.encode(), b"NaN")
    if kind is BadKind.FUTURE_TIMESTAMP:
        now_ms = int(datetime.now(tz=UTC).timestamp() * 1000)
        return orjson.dumps({**obj, "timestamp": (now_ms + FUTURE_SKEW_MS) // 1000})
    if kind is BadKind.SPOOFED_DEVICE_ID:
        return orjson.dumps({**obj, "device_id": spoof_as})
    padding = "x" * OVERSIZED_PAYLOAD_BYTES
    return orjson.dumps({**obj, "debug_dump": padding})


def status_online(
    *,
    uptime_s: int,
    heap_free: int,
    boot_count: int,
    config_version: int | None = None,
    firmware_version: str = FIRMWARE_VERSION,
) -> bytes:
    status: dict[str, object] = {
        "status": "online",
        "firmware_version": firmware_version,
        "uptime_s": uptime_s,
        "heap_free": heap_free,
        "boot_count": boot_count,
    }
    if config_version is not None:
        status["config_version"] = config_version  # the configuration version applied
    return orjson.dumps(status)


def command_result(command_id: str, *, succeeded: bool, result: object) -> bytes:
    return orjson.dumps(
        {
            "command_id": command_id,
            "status": "succeeded" if succeeded else "failed",
            "result": result,
        }
    )


def status_offline(*, uptime_s: int) -> bytes:
    """The explicit goodbye on a clean shutdown; differs from the will by its uptime."""
    return orjson.dumps({"status": "offline", "uptime_s": uptime_s})


def heartbeat(*, uptime_s: int) -> bytes:
    return orjson.dumps({"uptime_s": uptime_s})


def ota_progress(
    *, rollout_id: int | None, version: str, state: str, progress: int, error: str | None
) -> bytes:
    """A step of a firmware update, on `devices/{id}/ota/progress` (docs/ota.md)."""
    return orjson.dumps(
        {
            "rollout_id": rollout_id,
            "version": version,
            "state": state,
            "progress": progress,
            "error": error,
        }
    )
