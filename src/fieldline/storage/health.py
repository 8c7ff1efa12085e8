"""The processes' heartbeats, the failing health checks and their system alerts
(migration 0024): what `worker.health` judges and the admin health page shows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import AsyncConnection

from fieldline.domain.health import Backups, Finding, Process
from fieldline.storage import backups as backup_store
from fieldline.storage.db import Row

Conn = AsyncConnection[Row]

# A process not heard from for this long is forgotten: its row goes, and with it any
# down alert it kept open (a process taken away for good).
FORGET_AFTER = timedelta(days=1)


async def database_now(conn: Conn) -> datetime:
    row = await (await conn.execute("SELECT now() AS now")).fetchone()
    assert row is not None
    now: datetime = row["now"]
    return now


async def processes(conn: Conn) -> list[Process]:
    """Every process heard from within FORGET_AFTER, newest start first."""
    rows = await (
        await conn.execute(
            "SELECT id, role, name, parts, host, pid, version, started_at, seen_at, stopped_at,"
            " vitals FROM processes WHERE seen_at > now() - %s ORDER BY started_at DESC, id",
            (FORGET_AFTER,),
        )
    ).fetchall()
    return [Process(**row) for row in rows]


async def forget_processes(conn: Conn) -> int:
    cursor = await conn.execute(
        "DELETE FROM processes WHERE seen_at <= now() - %s", (FORGET_AFTER,)
    )
    return cursor.rowcount


async def worker_running(conn: Conn, down_after: timedelta) -> bool:
    """Whether a process running the worker was heard from within `down_after` and has
    not stopped (`Process.alive`, asked of the database without reading the vitals)."""
    cursor = await conn.execute(
        "SELECT 1 FROM processes WHERE 'worker' = ANY(parts)"
        " AND stopped_at IS NULL AND seen_at >= now() - %s LIMIT 1",
        (down_after,),
    )
    return await cursor.fetchone() is not None


@dataclass(frozen=True, slots=True)
class DatabaseFacts:
    version: str
    connections: int  # open to this database
    max_connections: int
    devices_online: int
    last_telemetry_at: datetime | None  # the newest message from any device


async def database_facts(conn: Conn) -> DatabaseFacts:
    row = await (
        await conn.execute(
            "SELECT version() AS version,"
            " (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())"
            "  AS connections, current_setting('max_connections')::int AS max_connections,"
            " (SELECT count(*) FROM devices WHERE status = 'online') AS devices_online,"
            " (SELECT max(last_seen) FROM devices) AS last_telemetry_at"
        )
    ).fetchone()
    assert row is not None
    return DatabaseFacts(**row)


async def backup_facts(conn: Conn) -> Backups:
    taken = await backup_store.last_backup(conn)
    verified = await backup_store.last_verification(conn, ok=True)
    return Backups(
        last_taken=taken.finished_at if taken else None,
        last_verified=verified.verified_at if verified else None,
        instance_created=await backup_store.instance_created(conn),
    )


@dataclass(frozen=True, slots=True)
class Failing:
    key: str
    failing_since: datetime
    severity: str
    summary: str


async def failing_checks(conn: Conn) -> list[Failing]:
    rows = await (
        await conn.execute(
            "SELECT key, failing_since, severity, summary FROM health_checks ORDER BY key"
        )
    ).fetchall()
    return [Failing(**row) for row in rows]


async def record_findings(conn: Conn, findings: Sequence[Finding], now: datetime) -> list[Failing]:
    """Keep what fails now (a new failure from `now`, a known one from when it began) and
    forget what no longer does; answer the failing checks as recorded."""
    await conn.execute(
        "DELETE FROM health_checks WHERE NOT key = ANY(%s)", ([f.key for f in findings],)
    )
    if findings:
        async with conn.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO health_checks (key, failing_since, severity, summary, judged_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET"
                " severity = excluded.severity, summary = excluded.summary,"
                " judged_at = excluded.judged_at",
                [(f.key, now, str(f.severity), f.summary, now) for f in findings],
            )
    return await failing_checks(conn)


async def open_system_alerts(conn: Conn) -> dict[str, int]:
    """The open system alerts' ids, by check key."""
    rows = await (
        await conn.execute(
            "SELECT system_check, id FROM alerts WHERE kind = 'system' AND state <> 'resolved'"
        )
    ).fetchall()
    return {row["system_check"]: row["id"] for row in rows}


async def open_system_alert(conn: Conn, failing: Failing) -> int | None:
    """Open the check's alert (started when it began failing); None if one is open."""
    row = await (
        await conn.execute(
            "INSERT INTO alerts (kind, rule_name, system_check, severity, started_at,"
            " transitions) VALUES ('system', %s, %s, %s, %s, 1)"
            " ON CONFLICT (system_check) WHERE state <> 'resolved' AND kind = 'system'"
            " DO NOTHING RETURNING id",
            (failing.summary, failing.key, failing.severity, failing.failing_since),
        )
    ).fetchone()
    return int(row["id"]) if row else None


async def resolve_system_alert(conn: Conn, alert_id: int, reason: str) -> bool:
    cursor = await conn.execute(
        "UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_reason = %s,"
        " transitions = transitions + 1 WHERE id = %s AND state <> 'resolved'",
        (reason, alert_id),
    )
    return cursor.rowcount > 0
