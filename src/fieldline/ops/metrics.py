"""Prometheus metrics of one fieldline process, in a registry of its own (no globals)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
# A batch unwritten this long (failing, or waiting on the database) makes ingest not ready.
WRITE_STALL_SECONDS = 15.0
WRITE_STALL_METRIC = "fieldline_ingest_write_stalled_seconds"
CONNECTED_METRIC = "fieldline_ingest_broker_connected"


# Another process's /metrics text (None while it cannot answer).
MetricsSource = Callable[[], Awaitable[str | None]]


@dataclass
class Metrics:
    """Uplinks are counted per message and per reading (one timestamped set of values;
    a batch message holds many). Every message received ends as exactly one of stored,
    duplicate or rejected, counted when that outcome is committed, so that
    received = stored + duplicate + rejected + the ingest queue depth."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Processes whose metrics this one's /metrics adds in: `fieldline up`'s ingest child.
    sources: list[MetricsSource] = field(default_factory=list)
    # This process's ingest writer, when it has one (see watch_ingest_writes).
    _write_stall: Callable[[], float] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.messages_received = Counter(
            "fieldline_messages_received",
            "Uplink messages received, by topic kind (per message, on arrival)",
            ["kind"],
            registry=r,
        )
        self.messages_stored = Counter(
            "fieldline_messages_stored",
            "Uplink messages stored, per message, at commit: telemetry with at least one "
            "new reading, status, heartbeats and command results applied",
            registry=r,
        )
        self.messages_duplicate = Counter(
            "fieldline_messages_duplicate",
            "Telemetry messages none of whose readings was new (all already stored), per "
            "message, at commit",
            registry=r,
        )
        self.readings_stored = Counter(
            "fieldline_readings_stored",
            "Readings (one timestamped set of values; a batch message holds many) stored",
            registry=r,
        )
        self.points_stored = Counter(
            "fieldline_points_stored",
            "Telemetry points (one value of one metric) stored",
            registry=r,
        )
        self.duplicates = Counter(
            "fieldline_readings_duplicate",
            "Readings (not messages) ignored because their message_id was already stored",
            registry=r,
        )
        self.messages_rejected = Counter(
            "fieldline_messages_rejected",
            "Uplink messages rejected, by reason, per message, once kept in the rejected store",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "fieldline_ingest_batch_size",
            "Messages per database write",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.ingest_latency = Histogram(
            "fieldline_ingest_latency_seconds",
            "From receipt of a message to its commit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ingest_queue_depth = Gauge(
            "fieldline_ingest_queue_depth", "Messages received and not yet written", registry=r
        )
        self.write_errors = Counter(
            "fieldline_ingest_write_errors",
            "Failed batch writes (retried, or split when the database refused what a "
            "message holds)",
            registry=r,
        )
        self.write_stalled = Gauge(
            WRITE_STALL_METRIC,
            "Seconds the batch being written has waited for its commit, failing or waiting "
            "on the database (0 when none is waiting)",
            registry=r,
        )
        self.devices_online = Gauge(
            "fieldline_devices_online", "Devices currently online", registry=r
        )
        self.http_requests = Counter(
            "fieldline_http_requests",
            "HTTP requests, by method, route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "fieldline_http_request_duration_seconds",
            "HTTP request durations",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.broker_connected = Gauge(
            CONNECTED_METRIC,
            "1 while ingest holds its broker session",
            registry=r,
        )
        self.session_losses = Counter(
            "fieldline_ingest_session_losses",
            "Ingest's broker session lost, by cause: taken_over (another connection under "
            "its client id), not_present (the broker had none at reconnect)",
            ["cause"],
            registry=r,
        )
        self.worker_jobs = Counter(
            "fieldline_worker_jobs",
            "Housekeeping job runs, by job and outcome (done, skipped: another worker had it, "
            "failed)",
            ["job", "outcome"],
            registry=r,
        )
        self.devices_timed_out = Counter(
            "fieldline_devices_timed_out",
            "Devices marked offline by the worker after falling silent",
            registry=r,
        )
        self.retention_last_run = Gauge(
            "fieldline_retention_last_run_timestamp_seconds",
            "When the worker's retention job last finished (Unix time)",
            registry=r,
        )
        self.archive_last_success = Gauge(
            "fieldline_archive_last_success_timestamp_seconds",
            "When the worker's archive job last finished without error (Unix time)",
            registry=r,
        )
        self.archive_files_written = Counter(
            "fieldline_archive_files_written",
            "Archive files written (points: an hour of raw points; daily: a day's aggregates), "
            "rewrites after late readings included",
            ["kind"],
            registry=r,
        )
        self.archive_rows_written = Counter(
            "fieldline_archive_rows_written",
            "Rows in the archive files written",
            ["kind"],
            registry=r,
        )
        self.archive_bytes_written = Counter(
            "fieldline_archive_bytes_written",
            "Bytes of the archive files written",
            ["kind"],
            registry=r,
        )
        self.archive_failures = Counter(
            "fieldline_archive_failures",
            "Archive runs that stopped on an error (store unreachable, refused, disk full)",
            registry=r,
        )
        self.archive_pending_files = Gauge(
            "fieldline_archive_pending_files",
            "Files the archive still has to write after the last run (a backlog, or what a "
            "failure left)",
            registry=r,
        )
        self.retention_partitions_held = Gauge(
            "fieldline_retention_partitions_held",
            "Partitions past their age that the last retention run kept because the archive "
            "does not hold them yet (FIELDLINE_ARCHIVE_URL)",
            ["tier"],
            registry=r,
        )
        self.retention_partitions_dropped = Counter(
            "fieldline_retention_partitions_dropped",
            "Partitions retention dropped, by tier (raw, hourly, daily)",
            ["tier"],
            registry=r,
        )
        self.retention_bytes_dropped = Counter(
            "fieldline_retention_dropped_bytes",
            "Bytes on disk of the partitions retention dropped, by tier",
            ["tier"],
            registry=r,
        )
        self.retention_rows_dropped = Counter(
            "fieldline_retention_dropped_rows",
            "Rows of the partitions retention dropped, by tier (PostgreSQL's estimate)",
            ["tier"],
            registry=r,
        )
        self.database_bytes = Gauge(
            "fieldline_database_bytes",
            "Size of the database on disk, as the worker's storage job last measured it",
            registry=r,
        )
        self.storage_tier_bytes = Gauge(
            "fieldline_storage_tier_bytes",
            "Size on disk of each telemetry tier (raw, hourly, daily), indexes included",
            ["tier"],
            registry=r,
        )
        self.storage_tier_rows = Gauge(
            "fieldline_storage_tier_rows",
            "Rows in each telemetry tier (PostgreSQL's estimate)",
            ["tier"],
            registry=r,
        )
        self.storage_growth = Gauge(
            "fieldline_storage_growth_bytes_per_day",
            "How fast the database grew over the last week, net of retention (NaN until "
            "measured for an hour)",
            registry=r,
        )
        self.disk_free_bytes = Gauge(
            "fieldline_disk_free_bytes",
            "Free space on the embedded database's disk (NaN for an external server)",
            registry=r,
        )
        self.storage_days_until_full = Gauge(
            "fieldline_storage_days_until_full",
            "Days until the embedded database's disk is full at the measured growth (NaN "
            "when not growing or not known)",
            registry=r,
        )
        self.message_ids_forgotten = Counter(
            "fieldline_message_ids_forgotten",
            "Message ids dropped from the de-duplication ledger after the window",
            registry=r,
        )
        self.alerts_active = Gauge(
            "fieldline_alerts_active",
            "Open alerts, by severity and state (firing, acknowledged), as the worker's "
            "evaluator last counted them",
            ["severity", "state"],
            registry=r,
        )
        self.alert_evaluations = Counter(
            "fieldline_alert_evaluations",
            "Readings applied to a (threshold rule, device) by the evaluator",
            registry=r,
        )
        self.alert_readings_late = Counter(
            "fieldline_alert_readings_late",
            "Readings older than the newest one already applied to their (rule, device): "
            "counted, not applied",
            registry=r,
        )
        self.db_pool_size = Gauge(
            "fieldline_db_pool_connections", "Database pool connections", ["state"], registry=r
        )
        self.notifications = Counter(
            "fieldline_notifications",
            "Notification delivery outcomes: delivered, retried (an attempt failed, another "
            "follows), failed (given up), suppressed (silenced, queued but not sent)",
            ["outcome"],
            registry=r,
        )
        self.notifications_pending = Gauge(
            "fieldline_notifications_pending",
            "Notifications waiting for delivery (as the dispatcher last counted)",
            registry=r,
        )
        self.certificate_expiry = Gauge(
            "fieldline_certificate_expiry_timestamp_seconds",
            "When each configured MQTT TLS certificate file expires (its notAfter, Unix "
            "time), as the worker's certificates job last read it",
            ["file"],
            registry=r,
        )
        self._backup_metrics()

    def _backup_metrics(self) -> None:
        """The backups' (docs/data.md, "Backups"): refreshed by the worker's backup jobs from
        the database every hour, so backups taken from the command line count too."""
        r = self.registry
        self.backup_last_success = Gauge(
            "fieldline_backup_last_success_timestamp_seconds",
            "When the newest backup to FIELDLINE_BACKUP_URL finished (Unix time; 0: none yet)",
            registry=r,
        )
        self.backup_bytes = Gauge(
            "fieldline_backup_bytes",
            "Size of the newest backup (the database's dump and the data directory's files)",
            registry=r,
        )
        self.backup_last_verified = Gauge(
            "fieldline_backup_last_verified_timestamp_seconds",
            "When a backup last restored into a scratch database and matched its manifest "
            "(Unix time; 0: never)",
            registry=r,
        )
        self.backup_failures = Counter(
            "fieldline_backup_failures",
            "Backups that failed (step=backup) and verifications that failed or found a "
            "backup that does not restore as dumped (step=verify)",
            ["step"],
            registry=r,
        )

    def watch_ingest_writes(self, stalled: Callable[[], float]) -> None:
        """Report this process's ingest writer: `stalled()` as WRITE_STALL_METRIC."""
        self._write_stall = stalled
        self.write_stalled.set_function(stalled)

    async def ingest_checks(self) -> dict[str, bool]:
        """Readiness of the ingest this process runs, or reads the metrics of (`up`'s
        child beside amqtt): its writes are not stalled and it holds its broker session.

        Empty when neither runs ingest (`fieldline api`). An ingest child that cannot be
        read (dead, restarting) is not ready: nothing is stored meanwhile.
        """
        if self._write_stall is not None:
            connected = self.registry.get_sample_value(CONNECTED_METRIC)
            return {
                "ingest_writes": self._write_stall() <= WRITE_STALL_SECONDS,
                "ingest_broker": connected == 1,
            }
        if not self.sources:
            return {}
        stalls: list[float] = []
        connected_values: list[float] = []
        for text in await asyncio.gather(*(s() for s in self.sources)):
            for family in text_string_to_metric_families(text or ""):
                if family.name == WRITE_STALL_METRIC:
                    stalls += [sample.value for sample in family.samples]
                elif family.name == CONNECTED_METRIC:
                    connected_values += [sample.value for sample in family.samples]
        return {
            "ingest_writes": bool(stalls) and max(stalls) <= WRITE_STALL_SECONDS,
            "ingest_broker": bool(connected_values) and min(connected_values) == 1,
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def render_all(self) -> bytes:
        """This process's metrics with its sources' added in, as one process's would be."""
        texts = [text for text in await asyncio.gather(*(s() for s in self.sources)) if text]
        own = self.render()
        if not texts:
            return own
        return merge_expositions([own.decode(), *texts])


def merge_expositions(texts: Iterable[str]) -> bytes:
    """Prometheus expositions of processes with the same metrics, summed sample by sample.

    Counters, histograms and gauges alike add up (a process that does not run a part
    reports zeros for it); the `_created` timestamps keep the earliest.
    """
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type)
            )
            samples = values.setdefault(merged.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in samples:
                    samples[key] = sample.value
                elif sample.name.endswith("_created"):
                    samples[key] = min(samples[key], sample.value)
                else:
                    samples[key] += sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return generate_latest(_Families(list(families.values())))


@dataclass(frozen=True, slots=True)
class _Families:
    """Metric families in the shape `generate_latest` renders."""

    families: list[Metric]

    def collect(self) -> list[Metric]:
        return self.families
