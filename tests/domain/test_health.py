"""fieldline's own health checks, judged from heartbeats (domain/health.py): each check
fails on what the matching Prometheus rule fires on, and on nothing less."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fieldline.domain.alerts import Severity
from fieldline.domain.health import Backups, Finding, Process, describe_seconds, judge
from fieldline.ops.heartbeat import quantile

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
DOWN_AFTER = timedelta(seconds=60)
BACKED_UP = Backups(
    last_taken=NOW - timedelta(hours=3),
    last_verified=NOW - timedelta(hours=2),
    instance_created=NOW - timedelta(days=30),
)
WORKER_OK = {
    "retention_last_run": (NOW - timedelta(minutes=20)).timestamp(),
    "database_bytes": 5e9,
    "disk_free_bytes": 50e9,
    "days_until_full": 400.0,
}


def process(
    role: str,
    *,
    name: str | None = None,
    parts: list[str] | None = None,
    seen: float = 5,
    stopped: bool = False,
    vitals: dict[str, Any] | None = None,
    started_hours: float = 1,
) -> Process:
    seen_at = NOW - timedelta(seconds=seen)
    return Process(
        id=f"{role}-{name}",
        role=role,
        name=name or role,
        parts=parts or [role],
        host="box",
        pid=1,
        version="0.1.0",
        started_at=NOW - timedelta(hours=started_hours),
        seen_at=seen_at,
        stopped_at=seen_at if stopped else None,
        vitals=vitals
        if vitals is not None
        else ({"worker": WORKER_OK} if role == "worker" else {}),
    )


def findings(
    *processes: Process, backups: Backups = BACKED_UP, archive: bool = False
) -> dict[str, Finding]:
    found = judge(NOW, processes, backups, down_after=DOWN_AFTER, archive_configured=archive)
    return {finding.key: finding for finding in found}


def fleet(**overrides: Process) -> list[Process]:
    parts = {"api": process("api"), "ingest": process("ingest"), "worker": process("worker")}
    return list((parts | overrides).values())


def test_a_running_platform_fails_no_check() -> None:
    assert findings(*fleet()) == {}
    assert (
        findings(process("up", parts=["api", "ingest", "worker"], vitals={"worker": WORKER_OK}))
        == {}
    )


def test_a_part_is_down_once_no_process_running_it_was_heard_from_for_the_down_time() -> None:
    crashed = process("ingest", name="ingest 1", seen=61)
    found = findings(*fleet(ingest=crashed))
    assert list(found) == ["ingest_down"]
    assert found["ingest_down"].severity is Severity.CRITICAL
    assert found["ingest_down"].summary == (
        "fieldline ingest is down: ingest 1 on box last heard from 1 min 1 s ago"
    )
    # Just stopped (a restart in progress): not yet; stopped a minute ago: down, and says so.
    assert findings(*fleet(ingest=process("ingest", seen=10, stopped=True))) == {}
    stopped = findings(*fleet(ingest=process("ingest", seen=70, stopped=True)))
    assert "stopped 1 min 10 s ago" in stopped["ingest_down"].summary
    # Another instance alive: the part runs.
    assert findings(*fleet(), process("ingest", name="ingest 2", seen=3600)) == {}
    # `up` runs every part: its silence is each part's.
    silent_up = process("up", parts=["api", "ingest", "worker"], seen=120)
    assert set(findings(silent_up)) == {"api_down", "ingest_down", "worker_down"}


def test_ingest_backlog_stalls_broker_lag_and_errors() -> None:
    ingest = process(
        "ingest",
        name="ingest 1",
        vitals={
            "ingest": {"queue_depth": 10_001, "broker_connected": 0, "write_stalled_seconds": 61},
            "rates": {"latency_p99_5m": 5.5, "5m": {"write_errors": 2}},
        },
    )
    found = findings(*fleet(ingest=ingest))
    assert set(found) == {
        "ingest_backlog:ingest 1",
        "broker_disconnected:ingest 1",
        "ingest_write_stalled:ingest 1",
        "ingest_lag:ingest 1",
        "ingest_write_errors:ingest 1",
    }
    assert found["ingest_backlog:ingest 1"].for_seconds == 300
    assert found["broker_disconnected:ingest 1"].severity is Severity.CRITICAL
    calm = process(
        "ingest",
        vitals={
            "ingest": {"queue_depth": 10_000, "broker_connected": 1, "write_stalled_seconds": 60},
            "rates": {"latency_p99_5m": 5.0, "5m": {"write_errors": 0}},
        },
    )
    assert findings(*fleet(ingest=calm)) == {}


def test_rejected_share_counts_every_ingest_and_needs_enough_messages() -> None:
    def ingest(name: str, received: float, rejected: float) -> Process:
        return process(
            "ingest",
            name=name,
            vitals={"rates": {"10m": {"received": received, "rejected": rejected}}},
        )

    found = findings(*fleet(ingest=ingest("a", 100, 4)), ingest("b", 100, 7))
    assert found["rejected_rate"].summary.startswith("6% of uplink messages are rejected")
    assert findings(*fleet(ingest=ingest("a", 100, 5))) == {}  # 5%: not above
    assert findings(*fleet(ingest=ingest("a", 50, 50))) == {}  # too few to judge


def test_http_errors_share() -> None:
    failing = process("api", vitals={"rates": {"5m": {"requests": 100, "errors_5xx": 6}}})
    assert list(findings(*fleet(api=failing))) == ["http_errors:api"]
    few = process("api", vitals={"rates": {"5m": {"requests": 10, "errors_5xx": 10}}})
    assert findings(*fleet(api=few)) == {}


def test_disk_headroom_once_measured() -> None:
    def worker(**vitals: float | None) -> Process:
        return process("worker", vitals={"worker": WORKER_OK | vitals})

    assert list(findings(*fleet(worker=worker(days_until_full=10)))) == ["disk_filling"]
    assert list(findings(*fleet(worker=worker(days_until_full=2)))) == ["disk_full"]
    low = findings(*fleet(worker=worker(disk_free_bytes=0.5 * 2**30, days_until_full=None)))
    assert low["disk_full"].summary == "The database disk is nearly full: 0.5 GiB free"
    # Before the worker's storage job measured anything, its zeros are no finding.
    assert findings(*fleet(worker=worker(database_bytes=0, disk_free_bytes=0))) == {}


def test_retention_and_archive_late_or_failing() -> None:
    late = process(
        "worker",
        vitals={
            "worker": WORKER_OK | {"retention_last_run": (NOW - timedelta(hours=4)).timestamp()}
        },
    )
    assert found_summary(findings(*fleet(worker=late)), "retention_not_running") == (
        "Retention last finished 4 h 0 min ago"
    )
    never = process("worker", vitals={"worker": WORKER_OK | {"retention_last_run": 0}})
    assert findings(*fleet(worker=never)) == {}  # started an hour ago: not late yet
    old = process(
        "worker", started_hours=5, vitals={"worker": WORKER_OK | {"retention_last_run": 0}}
    )
    assert "retention_not_running" in findings(*fleet(worker=old))

    archived = (NOW - timedelta(hours=4)).timestamp()
    behind = process("worker", vitals={"worker": WORKER_OK | {"archive_last_success": archived}})
    assert "archive_behind" in findings(*fleet(worker=behind), archive=True)
    assert findings(*fleet(worker=behind), archive=False) == {}
    failing = process(
        "worker",
        vitals={"worker": WORKER_OK, "rates": {"1h": {"archive_failures": 3, "archive_files": 0}}},
    )
    assert list(findings(*fleet(worker=failing))) == ["archive_failing"]


def found_summary(found: dict[str, Finding], key: str) -> str:
    return found[key].summary


def test_backups_too_old_or_never_verified() -> None:
    old = Backups(NOW - timedelta(hours=37), NOW - timedelta(hours=36), NOW - timedelta(days=9))
    assert list(findings(*fleet(), backups=old)) == ["backup_too_old"]
    none_yet = Backups(None, None, NOW - timedelta(days=2))
    assert found_summary(findings(*fleet(), backups=none_yet), "backup_too_old") == (
        "There is no backup yet"
    )
    young = Backups(None, None, NOW - timedelta(hours=20))
    assert findings(*fleet(), backups=young) == {}
    unverified = Backups(NOW - timedelta(hours=1), NOW - timedelta(days=3), NOW - timedelta(days=9))
    assert list(findings(*fleet(), backups=unverified)) == ["backup_not_verified"]
    first = Backups(NOW - timedelta(hours=1), None, NOW - timedelta(days=1, hours=1))
    assert findings(*fleet(), backups=first) == {}  # its verification follows
    # Without a live worker nobody takes backups: only "worker is down" is said.
    assert list(findings(process("api"), process("worker", seen=600), backups=old)) == [
        "worker_down"
    ]


def test_certificates_at_30_and_3_days() -> None:
    def expiring(days: float) -> Process:
        at = (NOW + timedelta(days=days)).timestamp()
        return process(
            "worker", vitals={"worker": WORKER_OK | {"certificates": {"/tls/a.pem": at}}}
        )

    assert findings(*fleet(worker=expiring(31))) == {}
    soon = findings(*fleet(worker=expiring(29)))
    assert soon["certificate_expires_in_30_days:/tls/a.pem"].severity is Severity.WARNING
    assert soon["certificate_expires_in_30_days:/tls/a.pem"].summary == (
        "The certificate /tls/a.pem expires in 29 d 0 h"
    )
    urgent = findings(*fleet(worker=expiring(2)))
    assert list(urgent) == ["certificate_expires_in_3_days:/tls/a.pem"]
    gone = findings(*fleet(worker=expiring(-1)))
    assert gone["certificate_expires_in_3_days:/tls/a.pem"].summary.endswith("has expired")


def test_a_worker_job_that_keeps_failing() -> None:
    def jobs(failures: int) -> Process:
        run = {"failures_in_a_row": failures, "error": "OSError: disk full"}
        return process("worker", vitals={"worker": WORKER_OK, "jobs": {"backup": run}})

    assert findings(*fleet(worker=jobs(2))) == {}
    found = findings(*fleet(worker=jobs(3)))
    assert found_summary(found, "worker_job_failing:backup") == (
        "The worker's backup job failed 3 times in a row: OSError: disk full"
    )


def test_durations_read_as_people_write_them() -> None:
    assert [describe_seconds(s) for s in (0, 59.6, 95, 7260, 90_000)] == [
        "0 s",
        "1 min 0 s",
        "1 min 35 s",
        "2 h 1 min",
        "1 d 1 h",
    ]


def test_quantile_as_prometheus_computes_it() -> None:
    inf = float("inf")
    assert quantile(0.99, {}) is None
    assert quantile(0.99, {0.1: 0, 1.0: 0, inf: 0}) is None
    assert quantile(0.5, {0.1: 50, 1.0: 100, inf: 100}) == 0.1
    assert quantile(0.99, {0.1: 50, 1.0: 100, inf: 100}) == 0.1 + 0.9 * 49 / 50
    assert quantile(0.99, {0.1: 0, 1.0: 0, inf: 10}) == 1.0  # beyond the last finite bound
