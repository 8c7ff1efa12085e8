"""What the HTTP API needs from the running process, built by the entry point."""

from __future__ import annotations

from dataclasses import dataclass

from fieldline.broker.base import Broker
from fieldline.broker.publisher import Publisher
from fieldline.config import Settings
from fieldline.ops.metrics import Metrics
from fieldline.storage.db import Pool


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
