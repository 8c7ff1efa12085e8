"""Commands to devices (direct methods) and the results devices answer with (SPEC §2)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

# A command message is bounded like an uplink: small devices have small buffers.
MAX_MESSAGE_BYTES = 65_536


class CommandStatus(StrEnum):
    """pending → sent → succeeded | failed; pending or sent → expired past `expires_at`."""

    PENDING = "pending"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def open(self) -> bool:
        """Still waiting for the device: a result is accepted only now."""
        return self in (CommandStatus.PENDING, CommandStatus.SENT)


# What a device may answer with.
RESULT_STATUSES = (CommandStatus.SUCCEEDED, CommandStatus.FAILED)


class UnstorableJsonError(ValueError):
    """JSON that PostgreSQL cannot keep: NaN, Infinity, or a NUL character."""


class NonFiniteJsonError(UnstorableJsonError):
    """NaN or Infinity, which Python's JSON reader accepts and JSON does not have."""


def encode_json(value: object) -> str:
    """Compact JSON text of `value`, refusing what a jsonb column would refuse."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise NonFiniteJsonError("NaN and Infinity are not JSON") from exc
    except (TypeError, RecursionError) as exc:
        raise UnstorableJsonError(f"not representable as JSON: {exc}") from exc
    # json.dumps escapes NUL in strings and keys as \u0000, which jsonb refuses.
    if "\\u0000" in text:
        raise UnstorableJsonError("strings must not contain NUL (\\u0000)")
    return text


@dataclass(frozen=True, slots=True)
class Command:
    command_id: UUID
    device_id: str
    name: str
    params: dict[str, object]
    status: CommandStatus
    created_at: datetime
    created_by: str
    sent_at: datetime | None
    completed_at: datetime | None
    expires_at: datetime
    result: object

    def message(self) -> bytes:
        """What the device receives on its commands topic."""
        return command_message(self.command_id, self.name, self.params).encode()


def command_message(command_id: UUID, name: str, params: dict[str, object]) -> str:
    return encode_json({"command_id": str(command_id), "name": name, "params": params})


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A device's answer on `devices/{id}/commands/result`."""

    command_id: UUID
    status: CommandStatus  # one of RESULT_STATUSES
    result: object
