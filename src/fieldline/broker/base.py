"""The interface every broker adapter offers to the rest of fieldline.

The device registry in PostgreSQL is the source of truth; an adapter mirrors
it into the broker (credentials and per-device ACLs) and drops sessions of
devices whose access changed.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fieldline.domain.devices import RESERVED_CLIENT_ID_PREFIX, DeviceAccess, is_reserved_client_id
from fieldline.security.certs import WILDCARD_HOSTS, client_ssl_context


class BrokerError(RuntimeError):
    """The broker refused, failed or did not answer an administrative change."""


def refuse_reserved(device_id: str) -> None:
    """A device connects with its id as client id: one of fieldline's own ids would let it
    take over ingest's or a publisher's session."""
    if is_reserved_client_id(device_id):
        raise BrokerError(
            f"device id {device_id!r} is refused: ids starting with "
            f"{RESERVED_CLIENT_ID_PREFIX!r} are fieldline's own MQTT client ids"
        )


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """Where devices and fieldline's own clients reach the broker.

    `port` is where the broker accepts MQTT without TLS, or its TLS port when it
    has no plaintext listener. `ca_file` set: fieldline's own clients connect to
    `tls_port` with TLS, verifying the broker with this CA certificate.
    """

    host: str
    port: int
    tls_port: int | None = None
    mqtt5: bool = True  # False: the broker speaks MQTT 3.1.1 only (amqtt)
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if self.ca_file is not None and self.tls_port is None:
            raise ValueError("a broker endpoint with a CA file needs a TLS port")

    @property
    def client_port(self) -> int:
        """The port fieldline's own clients connect to."""
        if self.ca_file is not None and self.tls_port is not None:
            return self.tls_port
        return self.port

    def client_target(self) -> tuple[str, int, ssl.SSLContext | None]:
        """Host, port and TLS context (None: no TLS) for fieldline's own MQTT clients."""
        # A broker listening on every address is reached on loopback, which is also
        # a name its certificate carries; "0.0.0.0" never is.
        host = self.host
        if host in WILDCARD_HOSTS:
            host = "::1" if host == "::" else "127.0.0.1"
        if self.ca_file is None:
            return host, self.port, None
        try:
            context = client_ssl_context(self.ca_file)
        except OSError as exc:  # also ssl.SSLError: not a PEM certificate
            raise BrokerError(
                f"cannot use the broker's CA certificate {self.ca_file} "
                f"(`fieldline certs` writes one): {exc}"
            ) from exc
        return host, self.client_port, context


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
