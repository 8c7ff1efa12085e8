"""When backups were taken and verified (migration 0019): the worker's schedule, the
metrics, the API and the dashboard read it; what a backup holds is its manifest's."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row


@dataclass(frozen=True, slots=True)
class Taken:
    id: str
    location: str
    started_at: datetime
    finished_at: datetime
    bytes: int
    tables: int
    rows: int


@dataclass(frozen=True, slots=True)
class Verified:
    backup_id: str
    location: str
    verified_at: datetime
    ok: bool
    seconds: float
    problem: str | None


async def record_backup(conn: AsyncConnection[Any], taken: Taken) -> None:
    await conn.execute(
        "INSERT INTO backups (id, location, started_at, finished_at, bytes, tables, rows)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (location, id) DO NOTHING",
        (
            taken.id,
            taken.location,
            taken.started_at,
            taken.finished_at,
            taken.bytes,
            taken.tables,
            taken.rows,
        ),
    )


async def record_pruned(
    conn: AsyncConnection[Any], location: str, ids: Iterable[str], at: datetime
) -> None:
    await conn.execute(
        "UPDATE backups SET pruned_at = %s WHERE location = %s AND id = ANY(%s)",
        (at, location, list(ids)),
    )


async def record_verification(conn: AsyncConnection[Any], verified: Verified) -> None:
    await conn.execute(
        "INSERT INTO backup_verifications"
        " (backup_id, location, verified_at, ok, seconds, problem)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (
            verified.backup_id,
            verified.location,
            verified.verified_at,
            verified.ok,
            verified.seconds,
            verified.problem,
        ),
    )


async def last_backup(conn: AsyncConnection[Any], location: str | None = None) -> Taken | None:
    """The newest backup taken (to `location`, or anywhere)."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT id, location, started_at, finished_at, bytes, tables, rows FROM backups"
        " WHERE %(location)s::text IS NULL OR location = %(location)s"
        " ORDER BY finished_at DESC LIMIT 1",
        {"location": location},
    )
    row = await cursor.fetchone()
    return Taken(*row) if row else None


async def last_verification(
    conn: AsyncConnection[Any], *, ok: bool | None = None
) -> Verified | None:
    """The newest verification (only passed or only failed ones, with `ok`)."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT backup_id, location, verified_at, ok, seconds, problem FROM backup_verifications"
        " WHERE %(ok)s::boolean IS NULL OR ok = %(ok)s ORDER BY verified_at DESC LIMIT 1",
        {"ok": ok},
    )
    row = await cursor.fetchone()
    return Verified(*row) if row else None


async def verified(conn: AsyncConnection[Any], location: str, backup_id: str) -> bool:
    """Whether `backup_id` was verified (passed or failed: a failure is not retried daily)."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT 1 FROM backup_verifications WHERE location = %s AND backup_id = %s",
        (location, backup_id),
    )
    return await cursor.fetchone() is not None


async def instance_created(conn: AsyncConnection[Any]) -> datetime | None:
    """When this database was first migrated: the instance's birth."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute("SELECT min(applied_at) FROM schema_migrations")
    row = await cursor.fetchone()
    return row[0] if row else None
