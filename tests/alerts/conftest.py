"""The alert engine against real PostgreSQL 15: rules inserted with SQL (the rules API is
another part), readings stored by the real writer, rounds run by a real Worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fieldline.alerts.jobs import alert_jobs
from fieldline.config import Settings
from fieldline.domain.readings import Reading
from fieldline.ops.metrics import Metrics
from fieldline.storage import devices as device_store
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.migrate import migrate
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from fieldline.worker.service import Worker


@dataclass
class Engine:
    url: str
    pool: Pool
    settings: Settings
    metrics: Metrics
    worker: Worker

    def restart(self) -> None:
        """A new worker, as after the process was killed: nothing kept in memory."""
        self.worker = Worker(
            settings=self.settings, pool=self.pool, metrics=self.metrics, features=[alert_jobs]
        )

    async def evaluate(self) -> Any:
        return await self.worker.run_job("alert_evaluate")

    async def sql(self, statement: str, *params: Any) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(statement.encode(), params or None)
            return await cursor.fetchall() if cursor.description else []

    async def device(
        self, device_id: str, *, group: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        async with self.pool.connection() as conn:
            if group is not None:
                await conn.execute(
                    "INSERT INTO groups (name) VALUES (%s) ON CONFLICT DO NOTHING", (group,)
                )
            await device_store.create_device(
                conn,
                device_id=device_id,
                name="",
                device_type="sensor",
                group=group,
                metadata=metadata or {},
                secret_hash="x",
            )

    async def channel(self, name: str, *, enabled: bool = True) -> int:
        rows = await self.sql(
            "INSERT INTO notification_channels (name, type, config, enabled)"
            " VALUES (%s, 'webhook', '{}', %s) RETURNING id",
            name,
            enabled,
        )
        return int(rows[0]["id"])

    async def rule(
        self,
        condition: dict[str, Any],
        *,
        scope: tuple[str, str] = ("fleet", ""),
        channels: list[int] | None = None,
        severity: str = "critical",
        repeat_seconds: int = 0,
        escalate_after_seconds: int = 0,
        escalate_channels: list[int] | None = None,
        name: str = "rule",
    ) -> int:
        rows = await self.sql(
            "INSERT INTO alert_rules (name, severity, scope_kind, scope_value, kind, metric,"
            " condition, channels, repeat_seconds, escalate_after_seconds, escalate_channels,"
            " created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'test')"
            " RETURNING id",
            name,
            severity,
            scope[0],
            scope[1],
            condition["type"],
            condition.get("metric"),
            json.dumps(condition),
            channels or [],
            repeat_seconds,
            escalate_after_seconds,
            escalate_channels or [],
        )
        return int(rows[0]["id"])

    async def write(self, device_id: str, *readings: tuple[datetime, float], metric: str = "t"):
        """One batch of the real writer on a connection of its own, as ingest writes it."""
        batch = Batch(
            telemetry=[
                DeviceReadings(
                    device_id,
                    datetime.now(UTC),
                    [Reading(uuid.uuid4().hex, t, {metric: v}, {}) for t, v in readings],
                )
            ]
        )
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            return await write_batch(conn, batch, PartitionCache())

    async def alerts(self) -> list[dict[str, Any]]:
        return await self.sql("SELECT * FROM alerts ORDER BY id")

    async def notifications(self) -> list[dict[str, Any]]:
        return await self.sql(
            "SELECT alert_id, channel_id, event, idempotency_key, status, last_error, body"
            " FROM notifications ORDER BY id"
        )


@pytest.fixture
async def engine(pg15_database_url: str, tmp_path: Path) -> AsyncIterator[Engine]:
    await migrate(pg15_database_url)
    pool = await open_pool(pg15_database_url, min_size=1, max_size=4)
    settings = Settings(data_dir=tmp_path, alert_interval_seconds=0.1)
    metrics = Metrics()
    worker = Worker(settings=settings, pool=pool, metrics=metrics, features=[alert_jobs])
    yield Engine(pg15_database_url, pool, settings, metrics, worker)
    await pool.close()


# The readings' time in tests that drive rules by readings alone: tomorrow, on the hour,
# ahead of the wall clock, so the timers (which run every round and count a device's
# silence by the wall clock) never run a duration out in them, whatever day they run.
T0 = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)


def at(seconds: float, base: datetime = T0) -> datetime:
    return base + timedelta(seconds=seconds)
