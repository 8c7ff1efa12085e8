"""A device's MQTT secret: made, hashed for the registry, and handed out once with where
to connect."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from fieldline.broker.base import BrokerEndpoint
from fieldline.security.passwords import generate_secret, hash_secret

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MqttAccess:
    """What a device needs to connect; the password exists only in this value."""

    username: str
    password: str
    host: str
    port: int
    tls_port: int | None
    ca_certificate: str | None


async def new_secret(iterations: int) -> tuple[str, str]:
    """A new device password and its encoded hash (hashed off the event loop)."""
    password = generate_secret()
    hashed = await asyncio.to_thread(hash_secret, password, iterations=iterations)
    return password, hashed.encode()


def mqtt_access(
    endpoint: BrokerEndpoint, *, host: str, ca_file: Path, device_id: str, password: str
) -> MqttAccess:
    """`host` is the advertised MQTT host; the ports are the adapter's, not the settings':
    a managed broker settles port 0 on a free port."""
    return MqttAccess(
        username=device_id,
        password=password,
        host=host,
        port=endpoint.port,
        tls_port=endpoint.tls_port,
        ca_certificate=ca_certificate(ca_file) if endpoint.tls_port is not None else None,
    )


def ca_certificate(path: Path) -> str | None:
    """The CA PEM devices verify the broker with, if fieldline has one.

    Never raises: the device is already registered when this runs, and its
    password must still reach the caller.
    """
    try:
        pem = path.read_text()
    except FileNotFoundError:
        return None  # an external broker with a publicly trusted certificate
    except (OSError, UnicodeDecodeError) as exc:
        log.error("cannot read the CA certificate", extra={"path": str(path), "error": str(exc)})
        return None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        log.error("the CA certificate file holds no PEM certificate", extra={"path": str(path)})
        return None
    return pem
