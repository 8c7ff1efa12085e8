"""fieldline's own health checks, judged from the processes' heartbeats. Pure: no I/O.

The same conditions as deploy/prometheus/fieldline-rules.yml, for a team without
Prometheus: each check answers a `Finding` while its condition holds; the caller
keeps when it started failing and raises a system alert once it has failed for
`for_seconds` (`worker.health`). Thresholds are the rules' own; docs/monitoring.md
lists both side by side.

A part (api, ingest, worker) is down when no process running it has been heard from
for `down_after` seconds (FIELDLINE_HEARTBEAT_SECONDS times DOWN_AFTER_BEATS): a crashed
process stops beating, a stopped one says so in its last beat, and either way a
restart that beats again within that time raises nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fieldline.domain.alerts import Severity

DOWN_AFTER_BEATS = 6
PARTS = ("api", "ingest", "worker")

BACKLOG_MESSAGES = 10_000
WRITE_STALLED_SECONDS = 60.0
LAG_P99_SECONDS = 5.0
REJECTED_SHARE = 0.05
REJECTED_MIN_MESSAGES = 100
HTTP_ERROR_SHARE = 0.05
HTTP_MIN_REQUESTS = 20
DISK_WARN_DAYS = 14.0
DISK_CRITICAL_DAYS = 3.0
DISK_MIN_FREE_BYTES = 1 << 30
RETENTION_LATE = timedelta(hours=3)
ARCHIVE_LATE = timedelta(hours=3)
BACKUP_LATE = timedelta(hours=36)
VERIFY_LATE = timedelta(days=2)
CERTIFICATE_WARN = timedelta(days=30)
CERTIFICATE_CRITICAL = timedelta(days=3)
JOB_FAILURES_IN_A_ROW = 3


def down_after(heartbeat_seconds: float) -> timedelta:
    """How long a process may be silent before it counts as down."""
    return timedelta(seconds=heartbeat_seconds * DOWN_AFTER_BEATS)


@dataclass(frozen=True, slots=True)
class Process:
    """A `processes` row: one fieldline process as its last heartbeat described it."""

    id: str
    role: str
    name: str
    parts: Sequence[str]
    host: str
    pid: int
    version: str
    started_at: datetime
    seen_at: datetime
    stopped_at: datetime | None
    vitals: Mapping[str, Any]

    def alive(self, now: datetime, down_after: timedelta) -> bool:
        return self.stopped_at is None and now - self.seen_at <= down_after


@dataclass(frozen=True, slots=True)
class Backups:
    last_taken: datetime | None
    last_verified: datetime | None  # a verification that passed
    instance_created: datetime | None


@dataclass(frozen=True, slots=True)
class Finding:
    """A check whose condition holds now."""

    key: str  # the check's name, and ':' with its subject when it has one
    severity: Severity
    summary: str
    for_seconds: float  # how long it must hold before it is an alert


def judge(
    now: datetime,
    processes: Sequence[Process],
    backups: Backups,
    *,
    down_after: timedelta,
    archive_configured: bool,
) -> list[Finding]:
    """Every check that fails now, by key."""
    alive = [p for p in processes if p.alive(now, down_after)]
    found = _down(now, processes, down_after)
    for process in alive:
        if "ingest" in process.parts:
            found += _ingest(process)
        if "api" in process.parts:
            found += _http(process)
    found += _rejected(alive)
    workers = sorted((p for p in alive if "worker" in p.parts), key=lambda p: p.seen_at)
    if workers:  # what the worker measures, from the one heard from last
        found += _worker(now, workers[-1], archive_configured)
        found += _backups(now, backups)
    for process in alive:
        if "worker" in process.parts:
            found += _jobs(process)
    return sorted({f.key: f for f in found}.values(), key=lambda f: f.key)


def _ago(now: datetime, then: datetime) -> str:
    return describe_seconds((now - then).total_seconds())


def describe_seconds(seconds: float) -> str:
    """`95` → '1 min 35 s'; days and hours beyond an hour."""
    whole = max(0, round(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def _down(now: datetime, processes: Sequence[Process], down_after: timedelta) -> list[Finding]:
    found = []
    for part in PARTS:
        running = [p for p in processes if part in p.parts]
        if not running:
            continue
        last = max(running, key=lambda p: p.seen_at)
        if now - last.seen_at <= down_after:  # running, or stopped a moment ago (a restart)
            continue
        how = "stopped" if last.stopped_at is not None else "last heard from"
        found.append(
            Finding(
                f"{part}_down",
                Severity.CRITICAL,
                f"fieldline {part} is down: {last.name} on {last.host} {how} "
                f"{_ago(now, last.seen_at)} ago",
                0,
            )
        )
    return found


def _number(section: Mapping[str, Any], key: str) -> float | None:
    value = section.get(key)
    return float(value) if isinstance(value, int | float) else None


def _rates(process: Process, window: str) -> Mapping[str, Any]:
    rates = process.vitals.get("rates", {})
    found = rates.get(window, {}) if isinstance(rates, Mapping) else {}
    return found if isinstance(found, Mapping) else {}


def _ingest(process: Process) -> list[Finding]:
    vitals = process.vitals.get("ingest", {})
    name, found = process.name, []
    depth = _number(vitals, "queue_depth")
    if depth is not None and depth > BACKLOG_MESSAGES:
        found.append(
            Finding(
                f"ingest_backlog:{name}",
                Severity.WARNING,
                f"{name} holds {depth:,.0f} messages not yet written",
                300,
            )
        )
    stalled = _number(vitals, "write_stalled_seconds")
    if stalled is not None and stalled > WRITE_STALLED_SECONDS:
        found.append(
            Finding(
                f"ingest_write_stalled:{name}",
                Severity.CRITICAL,
                f"{name}: a batch has waited {describe_seconds(stalled)} for its commit",
                60,
            )
        )
    if _number(vitals, "broker_connected") == 0:
        found.append(
            Finding(
                f"broker_disconnected:{name}",
                Severity.CRITICAL,
                f"{name} has no broker session: devices' messages wait at the broker",
                120,
            )
        )
    p99 = _number(process.vitals.get("rates", {}), "latency_p99_5m")
    if p99 is not None and p99 > LAG_P99_SECONDS:
        found.append(
            Finding(
                f"ingest_lag:{name}",
                Severity.WARNING,
                f"{name}: 99% of messages take up to {p99:.1f} s from receipt to commit",
                600,
            )
        )
    if (_number(_rates(process, "5m"), "write_errors") or 0) > 0:
        found.append(
            Finding(
                f"ingest_write_errors:{name}",
                Severity.WARNING,
                f"{name}: batch writes keep failing",
                600,
            )
        )
    return found


def _rejected(alive: Sequence[Process]) -> list[Finding]:
    received = rejected = 0.0
    for process in alive:
        if "ingest" in process.parts:
            rates = _rates(process, "10m")
            received += _number(rates, "received") or 0
            rejected += _number(rates, "rejected") or 0
    if received < REJECTED_MIN_MESSAGES or rejected / received <= REJECTED_SHARE:
        return []
    return [
        Finding(
            "rejected_rate",
            Severity.WARNING,
            f"{rejected / received:.0%} of uplink messages are rejected "
            f"({rejected:,.0f} of {received:,.0f} in 10 minutes)",
            900,
        )
    ]


def _http(process: Process) -> list[Finding]:
    rates = _rates(process, "5m")
    requests, errors = _number(rates, "requests") or 0, _number(rates, "errors_5xx") or 0
    if requests < HTTP_MIN_REQUESTS or errors / requests <= HTTP_ERROR_SHARE:
        return []
    return [
        Finding(
            f"http_errors:{process.name}",
            Severity.WARNING,
            f"{process.name}: {errors / requests:.0%} of requests fail with 5xx",
            600,
        )
    ]


def _worker(now: datetime, worker: Process, archive_configured: bool) -> list[Finding]:
    vitals, found = worker.vitals.get("worker", {}), []
    days, free = _number(vitals, "days_until_full"), _number(vitals, "disk_free_bytes")
    if not _number(vitals, "database_bytes"):  # not measured yet since the worker started
        days = free = None
    if (days is not None and days < DISK_CRITICAL_DAYS) or (
        free is not None and free < DISK_MIN_FREE_BYTES
    ):
        left = f"{free / (1 << 30):.1f} GiB free" if free is not None else "little space"
        found.append(
            Finding(
                "disk_full",
                Severity.CRITICAL,
                f"The database disk is nearly full: {left}"
                + (f", full in {days:.1f} days" if days is not None else ""),
                600,
            )
        )
    elif days is not None and days < DISK_WARN_DAYS:
        found.append(
            Finding(
                "disk_filling",
                Severity.WARNING,
                f"The database disk is full in {days:.1f} days at the measured growth",
                3600,
            )
        )
    retention = _number(vitals, "retention_last_run") or 0
    since = _from_unix(retention) if retention > 0 else worker.started_at
    if now - since > RETENTION_LATE:
        found.append(
            Finding(
                "retention_not_running",
                Severity.WARNING,
                f"Retention last finished {_ago(now, since)} ago"
                if retention > 0
                else f"Retention has not finished since the worker started {_ago(now, since)} ago",
                1800,
            )
        )
    archived = _number(vitals, "archive_last_success") or 0
    if archive_configured and archived > 0 and now - _from_unix(archived) > ARCHIVE_LATE:
        found.append(
            Finding(
                "archive_behind",
                Severity.WARNING,
                f"The archive last succeeded {_ago(now, _from_unix(archived))} ago",
                1800,
            )
        )
    hour = _rates(worker, "1h")
    if (_number(hour, "archive_failures") or 0) > 0 and not _number(hour, "archive_files"):
        found.append(
            Finding(
                "archive_failing",
                Severity.WARNING,
                "Archive runs fail and write nothing",
                3600,
            )
        )
    certificates = vitals.get("certificates", {})
    for path, expires in sorted(certificates.items() if isinstance(certificates, dict) else []):
        remaining = _from_unix(float(expires)) - now
        if remaining < CERTIFICATE_CRITICAL:
            key, severity = "certificate_expires_in_3_days", Severity.CRITICAL
        elif remaining < CERTIFICATE_WARN:
            key, severity = "certificate_expires_in_30_days", Severity.WARNING
        else:
            continue
        seconds = remaining.total_seconds()
        when = "has expired" if seconds <= 0 else f"expires in {describe_seconds(seconds)}"
        found.append(Finding(f"{key}:{path}", severity, f"The certificate {path} {when}", 0))
    return found


def _backups(now: datetime, backups: Backups) -> list[Finding]:
    found = []
    born = backups.instance_created
    taken = backups.last_taken
    if taken is not None and now - taken > BACKUP_LATE:
        found.append(
            Finding(
                "backup_too_old",
                Severity.CRITICAL,
                f"The newest backup is {_ago(now, taken)} old",
                3600,
            )
        )
    elif taken is None and born is not None and now - born > BACKUP_LATE:
        found.append(Finding("backup_too_old", Severity.WARNING, "There is no backup yet", 3600))
    verified = backups.last_verified
    if taken is not None and (verified is None or now - verified > VERIFY_LATE):
        if verified is None and now - taken <= VERIFY_LATE:
            return found  # the first backup: its verification follows within the hour
        found.append(
            Finding(
                "backup_not_verified",
                Severity.WARNING,
                "No backup was ever restored and verified"
                if verified is None
                else f"No backup was restored and verified for {_ago(now, verified)}",
                3600,
            )
        )
    return found


def _jobs(worker: Process) -> list[Finding]:
    jobs = worker.vitals.get("jobs", {})
    found = []
    for name, job in sorted(jobs.items() if isinstance(jobs, dict) else []):
        failures = _number(job, "failures_in_a_row") or 0
        if failures >= JOB_FAILURES_IN_A_ROW:
            error = job.get("error") or "an error"
            found.append(
                Finding(
                    f"worker_job_failing:{name}",
                    Severity.WARNING,
                    f"The worker's {name} job failed {failures:.0f} times in a row: {error}",
                    0,
                )
            )
    return found


def _from_unix(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
