"""Devices as the rest of fieldline sees them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

# No MQTT wildcards, separators or `$`: a device id is used verbatim in topics
# and as the MQTT username.
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# A device's MQTT client id is its id, and fieldline's own clients (ingest, publishers,
# the dynamic-security admin) use ids starting with this: no device id may, or a device
# could take over their sessions. (Service usernames start with `_`, which no id can.)
RESERVED_CLIENT_ID_PREFIX = "fieldline-"


class ConnectionStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    NEVER_SEEN = "never_seen"


def is_valid_device_id(device_id: str) -> bool:
    return DEVICE_ID_PATTERN.fullmatch(device_id) is not None and not is_reserved_client_id(
        device_id
    )


def is_reserved_client_id(client_id: str) -> bool:
    """An MQTT client id only fieldline's own accounts may use."""
    return client_id.lower().startswith(RESERVED_CLIENT_ID_PREFIX)


@dataclass(frozen=True, slots=True)
class DeviceAccess:
    """What a broker must know about a device to authenticate and authorize it."""

    device_id: str
    secret_hash: str  # encoded fieldline.security.passwords.SecretHash
    enabled: bool


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    name: str
    device_type: str
    group: str | None
    metadata: dict[str, object]
    enabled: bool
    reported_status: ConnectionStatus
    last_seen: datetime | None
    firmware_version: str | None
    created_at: datetime
    updated_at: datetime

    def status(self, *, now: datetime, online_timeout: timedelta) -> ConnectionStatus:
        """What an operator should see: a device silent for too long is offline."""
        if (
            self.reported_status is ConnectionStatus.ONLINE
            and self.last_seen is not None
            and now - self.last_seen > online_timeout
        ):
            return ConnectionStatus.OFFLINE
        return self.reported_status


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A change of a device's connection status, and why (last will, timeout, ...)."""

    time: datetime
    status: str
    detail: dict[str, object]


@dataclass(frozen=True, slots=True)
class Group:
    id: int
    name: str
    description: str
    created_at: datetime
    timezone: str | None  # an IANA zone name; None: the viewer's own choice
