"""What the HTTP API needs from the running process, built by the entry point."""

from __future__ import annotations

from dataclasses import dataclass, field

from fieldline.broker.base import Broker
from fieldline.config import Settings
from fieldline.ops.metrics import Metrics
from fieldline.storage.db import Pool


@dataclass
class Readiness:
    """Flags the process sets as its parts come up; /ready answers 200 when all are set."""

    database: bool = False
    migrations: bool = False
    broker: bool = False

    @property
    def ready(self) -> bool:
        return self.database and self.migrations and self.broker


@dataclass
class ApiContext:
    settings: Settings
    pool: Pool
    broker: Broker
    metrics: Metrics
    secret_key: str
    readiness: Readiness = field(default_factory=Readiness)
