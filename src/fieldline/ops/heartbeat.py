"""Every fieldline process says it is alive, and how it is, in the `processes` table.

Each beat (FIELDLINE_HEARTBEAT_SECONDS) writes the process's row: what it runs and its
vitals, the same numbers its /metrics serves plus rates over its own last hour (it
keeps its counters' past in memory, so no judge needs to). The health checks
(`domain.health`) and the admin health page read these rows; a process that stops
beating is down, and whichever process judges next sees it. The row's `seen_at` is the
database's clock, so hosts with skewed clocks still agree on who is late.

A failed beat is logged and tried again at the next: the heartbeat must never be what
stops a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import resource
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from prometheus_client import CollectorRegistry

from fieldline import __version__
from fieldline.ops.metrics import Metrics
from fieldline.storage.db import Pool

log = logging.getLogger(__name__)

# How far back the rates reach: the longest window a health check asks for.
HISTORY_SECONDS = 3600.0
WINDOWS = {"5m": 300.0, "10m": 600.0, "1h": 3600.0}

# The counters whose increase over WINDOWS the vitals carry, by the vitals' name.
COUNTERS = {
    "received": "fieldline_messages_received_total",
    "rejected": "fieldline_messages_rejected_total",
    "stored": "fieldline_messages_stored_total",
    "write_errors": "fieldline_ingest_write_errors_total",
    "requests": "fieldline_http_requests_total",
    "archive_failures": "fieldline_archive_failures_total",
    "archive_files": "fieldline_archive_files_written_total",
}
LATENCY = "fieldline_ingest_latency_seconds_bucket"


@dataclass(frozen=True, slots=True)
class Reading:
    """One look at the registry: counter totals (5xx apart) and the latency buckets."""

    at: float  # monotonic
    counters: dict[str, float]
    latency: dict[float, float]  # upper bound: cumulative count


def read_registry(registry: CollectorRegistry, at: float) -> Reading:
    counters = dict.fromkeys([*COUNTERS, "errors_5xx"], 0.0)
    by_sample = {sample: name for name, sample in COUNTERS.items()}
    latency: dict[float, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in by_sample:
                counters[by_sample[sample.name]] += sample.value
                if sample.name == COUNTERS["requests"] and sample.labels["status"][:1] == "5":
                    counters["errors_5xx"] += sample.value
            elif sample.name == LATENCY:
                bound = float(sample.labels["le"])
                latency[bound] = latency.get(bound, 0.0) + sample.value
    return Reading(at, counters, latency)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """`histogram_quantile` as Prometheus computes it, over cumulative `buckets`."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    below_bound, below_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return below_bound  # the highest finite bound, as Prometheus answers
            return below_bound + (bound - below_bound) * (rank - below_count) / (
                count - below_count or 1.0
            )
        below_bound, below_count = bound, count
    return below_bound


@dataclass
class History:
    """The readings of the last hour; rates over a window compare now with its start."""

    readings: deque[Reading] = field(default_factory=deque)

    def add(self, reading: Reading) -> None:
        self.readings.append(reading)
        while self.readings[0].at < reading.at - HISTORY_SECONDS - 60:
            self.readings.popleft()

    def over(self, seconds: float) -> tuple[Reading, Reading]:
        """The oldest reading within `seconds` of the newest, and the newest (the process's
        whole life when it is younger than that)."""
        newest = self.readings[-1]
        start = next(r for r in self.readings if r.at >= newest.at - seconds)
        return start, newest

    def rates(self) -> dict[str, Any]:
        """Each counter's increase over each window, the window's true length, and the
        ingest latency's 99th percentile over the last 5 minutes."""
        out: dict[str, Any] = {}
        for label, seconds in WINDOWS.items():
            start, newest = self.over(seconds)
            out[label] = {
                "seconds": round(newest.at - start.at, 1),
                **{
                    name: newest.counters[name] - start.counters.get(name, 0.0)
                    for name in newest.counters
                },
            }
        start, newest = self.over(WINDOWS["5m"])
        delta = {b: n - start.latency.get(b, 0.0) for b, n in newest.latency.items()}
        out["latency_p99_5m"] = quantile(0.99, delta)
        return out


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels or None)


def _by_label(registry: CollectorRegistry, sample_name: str, label: str) -> dict[str, float]:
    return {
        sample.labels[label]: sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == sample_name
    }


def vitals(
    metrics: Metrics,
    parts: Sequence[str],
    history: History,
    pool: Pool | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """What the heartbeat carries: per part, the numbers its health is judged by."""
    r = metrics.registry
    out: dict[str, Any] = {
        "rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # peak
        "cpu_seconds": round(time.process_time(), 2),
        "rates": history.rates(),
    }
    if pool is not None:
        stats = pool.get_stats()
        out["pool"] = {
            "size": stats.get("pool_size", 0),
            "available": stats.get("pool_available", 0),
            "waiting": stats.get("requests_waiting", 0),
            "max": pool.max_size,
        }
    if "ingest" in parts:
        out["ingest"] = {
            "queue_depth": _value(r, "fieldline_ingest_queue_depth"),
            "broker_connected": _value(r, "fieldline_ingest_broker_connected"),
            "write_stalled_seconds": _value(r, "fieldline_ingest_write_stalled_seconds"),
            "received_total": sum(
                _by_label(r, "fieldline_messages_received_total", "kind").values()
            ),
        }
    if "worker" in parts:
        out["worker"] = {
            "retention_last_run": _value(r, "fieldline_retention_last_run_timestamp_seconds"),
            "archive_last_success": _value(r, "fieldline_archive_last_success_timestamp_seconds"),
            "database_bytes": _value(r, "fieldline_database_bytes"),
            "disk_free_bytes": _finite(_value(r, "fieldline_disk_free_bytes")),
            "days_until_full": _finite(_value(r, "fieldline_storage_days_until_full")),
            "certificates": _by_label(r, "fieldline_certificate_expiry_timestamp_seconds", "file"),
            "notifications_pending": _value(r, "fieldline_notifications_pending"),
        }
    return out | extra


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class Heartbeat:
    """Writes this process's row every `interval` seconds until stopped.

    `parts`: of api, ingest and worker, what the process runs. `extra()` adds what only
    its owner knows (the worker's jobs). With a `pool` the beat borrows a connection and
    reports the pool's use; without one it keeps a connection of its own to `url`.
    """

    def __init__(
        self,
        *,
        url: str,
        role: str,
        name: str,
        parts: Iterable[str],
        metrics: Metrics,
        interval: float,
        pool: Pool | None = None,
        extra: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.id = secrets.token_hex(8)
        self._url, self._role, self._name = url, role, name
        self._parts = sorted(set(parts))
        self._metrics, self._interval, self._pool = metrics, interval, pool
        self._extra = extra
        self._started = datetime.now(UTC)
        self._history = History()
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            while not stopping.is_set():
                await self.beat()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=self._interval)
        finally:
            await self.beat(stopped=True)
            if self._conn is not None:
                await self._conn.close()

    async def beat(self, *, stopped: bool = False) -> None:
        self._history.add(read_registry(self._metrics.registry, time.monotonic()))
        data = vitals(self._metrics, self._parts, self._history, self._pool, self._extra())
        row = (
            self.id,
            self._role,
            self._name,
            self._parts,
            socket.gethostname(),
            os.getpid(),
            __version__,
            self._started,
            stopped,
            orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode(),
        )
        try:
            async with asyncio.timeout(max(self._interval, 5.0)):
                await self._write(row)
        except (psycopg.Error, OSError, TimeoutError) as error:
            log.warning("heartbeat not written", extra={"error": str(error)})
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
                self._conn = None

    async def _write(self, row: tuple[Any, ...]) -> None:
        sql = (
            "INSERT INTO processes (id, role, name, parts, host, pid, version, started_at,"
            " stopped_at, vitals) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
            " CASE WHEN %s THEN now() END, %s)"
            " ON CONFLICT (id) DO UPDATE SET seen_at = now(),"
            " stopped_at = excluded.stopped_at, vitals = excluded.vitals"
        )
        if self._pool is not None:
            async with self._pool.connection() as conn:
                await conn.execute(sql, row)
            return
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=5, application_name="fieldline-beat"
            )
        await self._conn.execute(sql, row)
