"""The interface every broker adapter offers to the rest of fieldline.

The device registry in PostgreSQL is the source of truth; an adapter mirrors
it into the broker (credentials and per-device ACLs) and drops sessions of
devices whose access changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fieldline.domain.devices import DeviceAccess


class BrokerError(RuntimeError):
    """The broker refused, failed or did not answer an administrative change."""


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """Where devices and fieldline's own clients reach the broker."""

    host: str
    port: int
    tls_port: int | None = None
    mqtt5: bool = True  # False: the broker speaks MQTT 3.1.1 only (amqtt)


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """fieldline's own MQTT identity: subscribes to every uplink, publishes downlinks."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class Drift:
    """Differences between the registry and the broker found by a reconcile."""

    missing: tuple[str, ...] = ()  # in the registry, absent from the broker
    unexpected: tuple[str, ...] = ()  # in the broker, unknown to the registry
    changed: tuple[str, ...] = ()  # present on both sides but different

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.changed)


class Broker(Protocol):
    @property
    def endpoint(self) -> BrokerEndpoint: ...

    @property
    def service(self) -> ServiceAccount: ...

    async def start(self, devices: Sequence[DeviceAccess]) -> Drift:
        """Start (or connect to) the broker and make it match `devices`."""
        ...

    async def stop(self) -> None: ...

    async def apply(self, device: DeviceAccess, *, password: str | None = None) -> None:
        """Create or update one device; drop its sessions if access was revoked or rotated.

        `password` is the plaintext secret behind `device.secret_hash`, passed when the
        caller has it (registration, rotation). Brokers that can only be given plaintext
        credentials at runtime (Mosquitto's dynamic-security API) need it to make a new
        or rotated secret work at once; brokers that verify the hash ignore it.
        """
        ...

    async def remove(self, device_id: str) -> None:
        """Delete a device from the broker and drop its sessions."""
        ...

    async def healthy(self) -> bool:
        """True when the broker accepts connections."""
        ...
