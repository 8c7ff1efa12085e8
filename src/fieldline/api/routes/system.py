"""fieldline's own health for its admins: every process from its heartbeat, the worker's
jobs, the failing health checks and their system alerts (the admin health page)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fieldline import __version__
from fieldline.api.deps import Admin, Context, DbConn
from fieldline.domain.health import Process, down_after
from fieldline.storage import accounting
from fieldline.storage import health as health_store

router = APIRouter(prefix="/api/v1/system", tags=["system"])


class PoolOut(BaseModel):
    size: int
    available: int
    waiting: int = Field(description="Requests waiting for a connection")
    max: int


class IngestOut(BaseModel):
    queue_depth: float | None = Field(description="Messages received and not yet written")
    broker_connected: bool | None = Field(description="Whether it holds its broker session")
    write_stalled_seconds: float | None = Field(
        description="How long the batch being written has waited for its commit (0: none)"
    )
    received_5m: float | None = Field(description="Messages received in the last 5 minutes")
    rejected_5m: float | None
    latency_p99_seconds: float | None = Field(
        description="99th percentile from receipt to commit over the last 5 minutes"
    )


class HttpOut(BaseModel):
    requests_5m: float | None
    errors_5xx_5m: float | None


class ProcessOut(BaseModel):
    id: str
    role: str = Field(description="up, api, ingest or worker")
    name: str
    parts: list[str] = Field(description="Of api, ingest and worker, what it runs")
    host: str
    pid: int
    version: str
    started_at: datetime
    seen_at: datetime = Field(description="Its last heartbeat (the database's clock)")
    stopped_at: datetime | None = Field(description="Set when it stopped cleanly")
    alive: bool = Field(description="Heard from within down_after_seconds and not stopped")
    uptime_seconds: float
    rss_bytes: int | None = Field(description="Peak resident memory")
    cpu_seconds: float | None
    pool: PoolOut | None = Field(description="Its database connection pool")
    ingest: IngestOut | None
    http: HttpOut | None


class JobOut(BaseModel):
    job: str
    process: str = Field(description="The worker that ran it")
    at: datetime = Field(description="When its last attempt started")
    outcome: str = Field(description="done, skipped (another worker had it) or failed")
    seconds: float
    error: str | None
    last_done: datetime | None = Field(
        description="Its last run that was neither skipped nor failed (a job with nothing due "
        "counts: the backup job looks hourly and backs up daily)"
    )
    failures_in_a_row: int


class CheckOut(BaseModel):
    key: str = Field(description="The check, and ':' with its subject when it has one")
    severity: str
    summary: str
    failing_since: datetime
    alert_id: int | None = Field(
        description="Its open system alert; null until it has failed long enough"
    )


class CertificateOut(BaseModel):
    file: str
    expires_at: datetime


class DatabaseOut(BaseModel):
    version: str
    bytes: int
    connections: int = Field(description="Connections open to this database")
    max_connections: int


class BackupStateOut(BaseModel):
    last_backup_at: datetime | None
    last_verified_at: datetime | None = Field(description="A backup last restored and matched")


class SystemOut(BaseModel):
    now: datetime = Field(description="The database's clock")
    api_version: str = Field(description="The version of the process answering")
    heartbeat_seconds: float
    down_after_seconds: float = Field(description="A process silent this long is down")
    processes: list[ProcessOut] = Field(description="Heard from within a day, newest first")
    jobs: list[JobOut] = Field(description="The worker jobs' last runs, by the live workers")
    checks: list[CheckOut] = Field(description="The health checks failing now")
    certificates: list[CertificateOut]
    database: DatabaseOut
    devices_online: int
    last_telemetry_at: datetime | None = Field(description="The newest message from any device")
    backups: BackupStateOut


@router.get("", response_model=SystemOut)
async def system(_: Admin, conn: DbConn, context: Context) -> SystemOut:
    interval = context.settings.heartbeat_seconds
    silent_for = down_after(interval)
    now = await health_store.database_now(conn)
    processes = await health_store.processes(conn)
    alerts = await health_store.open_system_alerts(conn)
    facts = await health_store.database_facts(conn)
    backups = await health_store.backup_facts(conn)
    live = [p for p in processes if p.alive(now, silent_for)]
    return SystemOut(
        now=now,
        api_version=__version__,
        heartbeat_seconds=interval,
        down_after_seconds=silent_for.total_seconds(),
        processes=[_process(p, now, silent_for) for p in processes],
        jobs=sorted(
            (job for p in live if "worker" in p.parts for job in _jobs(p)),
            key=lambda j: (j.job, j.process),
        ),
        checks=[
            CheckOut(
                key=f.key,
                severity=f.severity,
                summary=f.summary,
                failing_since=f.failing_since,
                alert_id=alerts.get(f.key),
            )
            for f in await health_store.failing_checks(conn)
        ],
        certificates=_certificates(live),
        database=DatabaseOut(
            version=facts.version,
            bytes=await accounting.database_bytes(conn),
            connections=facts.connections,
            max_connections=facts.max_connections,
        ),
        devices_online=facts.devices_online,
        last_telemetry_at=facts.last_telemetry_at,
        backups=BackupStateOut(
            last_backup_at=backups.last_taken, last_verified_at=backups.last_verified
        ),
    )


def _section(vitals: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    found = vitals.get(key)
    return found if isinstance(found, Mapping) else {}


def _process(p: Process, now: datetime, down_after: timedelta) -> ProcessOut:
    vitals = p.vitals
    rates = _section(vitals, "rates")
    five = _section(rates, "5m")
    ingest = _section(vitals, "ingest")
    pool = _section(vitals, "pool")
    connected = ingest.get("broker_connected")
    return ProcessOut(
        id=p.id,
        role=p.role,
        name=p.name,
        parts=list(p.parts),
        host=p.host,
        pid=p.pid,
        version=p.version,
        started_at=p.started_at,
        seen_at=p.seen_at,
        stopped_at=p.stopped_at,
        alive=p.alive(now, down_after),
        uptime_seconds=((p.stopped_at or p.seen_at) - p.started_at).total_seconds(),
        rss_bytes=vitals.get("rss_bytes"),
        cpu_seconds=vitals.get("cpu_seconds"),
        pool=PoolOut(**pool) if pool else None,
        ingest=IngestOut(
            queue_depth=ingest.get("queue_depth"),
            broker_connected=None if connected is None else connected == 1,
            write_stalled_seconds=ingest.get("write_stalled_seconds"),
            received_5m=five.get("received"),
            rejected_5m=five.get("rejected"),
            latency_p99_seconds=rates.get("latency_p99_5m"),
        )
        if "ingest" in p.parts
        else None,
        http=HttpOut(requests_5m=five.get("requests"), errors_5xx_5m=five.get("errors_5xx"))
        if "api" in p.parts
        else None,
    )


def _jobs(p: Process) -> list[JobOut]:
    jobs = _section(p.vitals, "jobs")
    return [
        JobOut(job=name, process=p.name, **run)
        for name, run in sorted(jobs.items())
        if isinstance(run, Mapping)
    ]


def _certificates(live: list[Process]) -> list[CertificateOut]:
    found: dict[str, datetime] = {}
    for p in live:
        for path, expires in _section(_section(p.vitals, "worker"), "certificates").items():
            found[path] = datetime.fromtimestamp(float(expires), UTC)
    return [CertificateOut(file=path, expires_at=at) for path, at in sorted(found.items())]
