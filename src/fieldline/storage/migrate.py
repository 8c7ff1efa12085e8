"""Versioned schema migrations: numbered SQL files applied once, in order, under a lock."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import tuple_row

log = logging.getLogger(__name__)

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x6669656C646C6E  # "fieldln": one migrator at a time across processes


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("fieldline.storage.migrations").iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def pending_migrations(conn: psycopg.AsyncConnection[Any]) -> list[Migration]:
    applied = await applied_versions(conn)
    return [m for m in available_migrations() if m.version not in applied]


async def applied_versions(conn: psycopg.AsyncConnection[Any]) -> set[int]:
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        exists = await cur.fetchone()
        if not exists or not exists[0]:
            return set()
        await cur.execute("SELECT version FROM schema_migrations")
        return {int(version) for (version,) in await cur.fetchall()}


async def migrate(url: str, *, up_to: int | None = None) -> list[Migration]:
    """Apply every pending migration, or those numbered up to `up_to` (the schema a
    release ended at, storage/releases.py); answer the ones applied now."""
    applied_now: list[Migration] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for migration in await pending_migrations(conn):
                if up_to is not None and migration.version > up_to:
                    break
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql.encode())
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                            (migration.version, migration.name),
                        )
                except psycopg.Error as exc:
                    # PostgreSQL's message does not say which file it came from.
                    exc.add_note(f"in migration {migration.version:04d}_{migration.name}")
                    raise
                log.info(
                    "migration applied",
                    extra={"version": migration.version, "migration": migration.name},
                )
                applied_now.append(migration)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
