"""What the HTTP API needs from the running process, built by the entry point."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fieldline.api.auth_limits import AuthLimits
from fieldline.api.device_auth import VerifiedSecrets
from fieldline.api.latest import LatestMirror
from fieldline.broker.base import Broker
from fieldline.broker.publisher import Publisher
from fieldline.config import Settings
from fieldline.ingest.ratelimit import DeviceRateLimiter, rate_limiter_from
from fieldline.ops.metrics import Metrics
from fieldline.storage.db import Pool
from fieldline.storage.writer import PartitionCache


@dataclass
class ApiContext:
    settings: Settings
    pool: Pool
    broker: Broker
    metrics: Metrics
    secret_key: str
    # Set once ingest and the HTTP server run; /ready also probes the database and broker.
    broker_started: bool = False
    # Downlinks (configuration, commands) as the service account; None in tests without one.
    publisher: Publisher | None = None
    # HTTP ingest's per-process state (api/device_auth.py, api/routes/device_http.py).
    partitions: PartitionCache = field(default_factory=PartitionCache)
    device_secrets: VerifiedSecrets = field(default_factory=VerifiedSecrets)
    # API keys that matched within the minute: PBKDF2 runs about once a minute per key.
    api_key_secrets: VerifiedSecrets = field(default_factory=VerifiedSecrets)
    device_rate_limiter: DeviceRateLimiter | None = field(init=False)
    # Failed passwords and API keys per address (this process) and per account.
    auth_limits: AuthLimits = field(init=False)
    # The fleet view's latest values (api/latest.py), started by its first request.
    latest: LatestMirror = field(init=False)
    # Set when the server starts stopping: open event streams end, so it need not wait.
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.device_rate_limiter = rate_limiter_from(self.settings)
        self.auth_limits = AuthLimits(self.settings)
        self.latest = LatestMirror(str(self.pool.conninfo))  # open_pool is given a URL

    async def close(self) -> None:
        """Release what requests started (the server's shutdown, or a test's end)."""
        await self.latest.close()
