"""Restoring a backup: into an empty database (or, told to, one emptied first), with the
data directory's secrets and certificates beside it.

With TimescaleDB in the backup, the extension is created first and the restore runs
between `timescaledb_pre_restore()` and `timescaledb_post_restore()`, as TimescaleDB
requires (its background workers stopped, its catalog taken as dumped). That path
cannot run in this project's CI, which has no TimescaleDB; FIELDLINE_TEST_DATABASE_URL
pointed at one runs the same tests through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row

from fieldline.backup import Bars, dump, files, manifest, no_bars, stored
from fieldline.backup.manifest import Manifest
from fieldline.blobs.base import BlobStore
from fieldline.config import Settings
from fieldline.ops.datadir import DataDirLock
from fieldline.storage.embedded import Database, database, server_directory
from fieldline.storage.pgserver import LocalPostgres

log = logging.getLogger(__name__)

_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")


class RestoreRefused(RuntimeError):
    """The target holds data a restore would replace; the message says what and how."""


@dataclass(frozen=True, slots=True)
class Restored:
    manifest: Manifest
    data_files: tuple[str, ...]


async def restore(
    url: str,
    data_dir: Path,
    store: BlobStore,
    backup_id: str | None,
    *,
    force: bool = False,
    bars: Bars = no_bars,
) -> Restored:
    """Restore `backup_id` (the newest when None) from `store` into the database at `url`
    and `data_dir`; refused (RestoreRefused) when either holds other data, unless `force`."""
    chosen = await asyncio.to_thread(stored.manifest, store, backup_id)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        found = await occupied(conn)
    if found and not force:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise RestoreRefused(
            f"the database is not empty (it has {shown}): restore into an empty database, "
            "or give --force to drop everything in it first"
        )
    with tempfile.TemporaryDirectory(prefix="fieldline-restore-") as tmp:
        with bars(f"Fetching {chosen.id}", None):
            dump_file, tar = await asyncio.to_thread(stored.fetch, store, chosen, Path(tmp))
        data = files.read(tar)
        replaced = files.conflicts(data_dir, data)
        if replaced and not force:
            raise RestoreRefused(
                f"{data_dir} already holds other {', '.join(replaced)}: restore into a new "
                "data directory, or give --force to replace them"
            )
        if found:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await empty(conn)
        with bars(f"Restoring {chosen.id}", len(chosen.tables)) as bar:
            await restore_database(url, chosen, dump_file, on_table=lambda _t: bar.advance())
    files.restore(data_dir, data)
    log.info(
        "backup restored",
        extra={"backup": chosen.id, "tables": len(chosen.tables), "data_files": len(data)},
    )
    return Restored(chosen, tuple(data))


async def restore_database(
    url: str, chosen: Manifest, dump_file: Path, *, on_table: Callable[[str], None]
) -> None:
    """The dump into the empty database at `url`, TimescaleDB's steps around it if needed."""
    if chosen.timescaledb is None:
        await asyncio.to_thread(dump.restore, url, dump_file, on_table=on_table)
        return
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        await conn.execute("SELECT timescaledb_pre_restore()")
        try:
            await asyncio.to_thread(dump.restore, url, dump_file, on_table=on_table)
        finally:
            await conn.execute("SELECT timescaledb_post_restore()")


async def occupied(conn: AsyncConnection[Any]) -> list[str]:
    """The tables already in the database (none: it is empty enough to restore into)."""
    return await manifest.tables(conn)


async def empty(conn: AsyncConnection[Any]) -> None:
    """Drop every schema but the system's (and so every table, view and extension in
    them), then make `public` again, as in a new database."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname <> ALL(%s)"
        " AND nspname NOT LIKE 'pg\\_toast%%' AND nspname NOT LIKE 'pg\\_temp%%'",
        (list(_SYSTEM_SCHEMAS),),
    )
    schemas = [name for (name,) in await cursor.fetchall()]
    async with conn.transaction():
        for schema in schemas:
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        await conn.execute("CREATE SCHEMA public")
    log.warning("emptied the database before a restore", extra={"schemas": schemas})


@contextlib.asynccontextmanager
async def target(settings: Settings) -> AsyncIterator[Database]:
    """The database `fieldline restore` writes to: DATABASE_URL's, or the embedded one of
    the data directory, which is created there when it has none yet (a new instance)."""
    if settings.database_url or LocalPostgres(server_directory(settings.data_dir)).initialised:
        async with database(settings, command="restore") as found:
            yield found
        return
    data_dir = settings.data_dir.resolve()
    lock = DataDirLock.acquire(data_dir, "restore")
    if not isinstance(lock, DataDirLock):
        raise RestoreRefused(f"{data_dir} is in use by {lock}; try again once it has finished")
    try:
        server = LocalPostgres(server_directory(data_dir))
        url = await asyncio.to_thread(server.start)
        try:
            yield Database(url, f"a new embedded PostgreSQL in {server.data_dir}")
        finally:
            await asyncio.to_thread(server.stop)
    finally:
        lock.release()
