"""What the HTTP API needs from the running process, built once by the entry point."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import TypedDict

from fieldline.api.auth_limits import AuthLimits
from fieldline.api.device_auth import VerifiedSecrets
from fieldline.api.latest import LatestMirror
from fieldline.broker.base import Broker
from fieldline.broker.publisher import Publisher
from fieldline.config import Settings
from fieldline.ingest.consumer import UplinkConsumer, decode_limits
from fieldline.ingest.ratelimit import DeviceRateLimiter, rate_limiter_from
from fieldline.ops.metrics import Metrics
from fieldline.ops.secrets import stored_secret
from fieldline.ota.keys import FirmwareKeys
from fieldline.ota.pieces import PieceCache
from fieldline.storage.db import Pool
from fieldline.storage.writer import PartitionCache


class _FromSettings(TypedDict):
    device_rate_limiter: DeviceRateLimiter | None
    uplinks: UplinkConsumer
    auth_limits: AuthLimits
    firmware_keys: FirmwareKeys


def _from_settings(settings: Settings) -> _FromSettings:
    limiter = rate_limiter_from(settings)
    return {
        "device_rate_limiter": limiter,
        "uplinks": UplinkConsumer(
            limits=decode_limits(settings.max_payload_bytes, settings.max_future_skew_seconds),
            rate_limiter=limiter,
            # Measured on arrival, unlike MQTT: no broker queue delivers an HTTP backlog.
            limit_by_sent_time=False,
        ),
        "auth_limits": AuthLimits(settings),
        "firmware_keys": FirmwareKeys(settings),
    }


@dataclass(frozen=True, slots=True)
class ApiContext:
    """Built by `build` (`fieldline up`, `fieldline api` and the tests alike); its fields
    are never reassigned. What changes while the process runs lives inside them (caches,
    events, counters), each of which says why."""

    settings: Settings
    pool: Pool
    broker: Broker
    metrics: Metrics
    secret_key: str
    device_rate_limiter: DeviceRateLimiter | None
    # HTTP ingest's side of the one uplink consumer (ingest/consumer.py).
    uplinks: UplinkConsumer
    # Failed passwords and API keys per address (this process) and per account.
    auth_limits: AuthLimits
    # The fleet view's latest values (api/latest.py), started by its first request.
    latest: LatestMirror
    # The firmware signing key (read at the first upload) and the keys devices trust.
    firmware_keys: FirmwareKeys
    # Downlinks (configuration, commands) as the service account; None in tests without one.
    publisher: Publisher | None = None
    # Set once ingest and the HTTP server run; /ready also probes the database and broker.
    broker_started: asyncio.Event = field(default_factory=asyncio.Event)
    # HTTP ingest's per-process state (api/device_auth.py, api/routes/device_http.py).
    partitions: PartitionCache = field(default_factory=PartitionCache)
    device_secrets: VerifiedSecrets = field(default_factory=VerifiedSecrets)
    # API keys that matched within the minute: PBKDF2 runs about once a minute per key.
    api_key_secrets: VerifiedSecrets = field(default_factory=VerifiedSecrets)
    # Firmware pieces being downloaded by devices (ota/pieces.py).
    firmware_pieces: PieceCache = field(default_factory=PieceCache)
    # Set when the server starts stopping: open event streams end, so it need not wait.
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        pool: Pool,
        broker: Broker,
        metrics: Metrics,
        publisher: Publisher | None = None,
    ) -> ApiContext:
        """The context of one API process; the signing key is the configured one, else
        the one generated once and kept in the data directory."""
        secret = settings.secret_key
        _from = _from_settings(settings)
        # A key that cannot be read or a trusted key that is no key refuses to start, now
        # rather than at the first upload (the platform's key is generated here if unset).
        _from["firmware_keys"].check()
        return cls(
            settings=settings,
            pool=pool,
            broker=broker,
            metrics=metrics,
            publisher=publisher,
            secret_key=(
                secret.get_secret_value()
                if secret
                else stored_secret(settings.data_dir, "secret_key")
            ),
            latest=LatestMirror(str(pool.conninfo)),  # open_pool is given a URL
            **_from,
        )

    def with_settings(self, settings: Settings) -> ApiContext:
        """The same process's context under other settings: what is derived from them is
        derived again, the process's state (caches, mirror, events) is kept."""
        return dataclasses.replace(self, settings=settings, **_from_settings(settings))

    async def close(self) -> None:
        """Release what requests started (the server's shutdown, or a test's end)."""
        await self.latest.close()
