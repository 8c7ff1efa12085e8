"""Taking a backup: the database as of one moment, its manifest, the data directory's files.

A REPEATABLE READ transaction exports its snapshot; pg_dump dumps that snapshot while
the same transaction counts and checksums every table in it, so the manifest describes
exactly what was dumped although ingest goes on writing (and both run at once, on the
server's two cores rather than one after the other). The backup is recorded in the
database once it is stored, so a backup holds the records of those before it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import IsolationLevel
from psycopg.rows import tuple_row

import fieldline
from fieldline.backup import Bars, dump, files, manifest, no_bars, stored
from fieldline.backup.manifest import DUMP, FILES, Manifest, Part
from fieldline.blobs.base import BlobStore
from fieldline.storage import backups

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Created:
    manifest: Manifest
    location: str
    seconds: float


async def create(url: str, data_dir: Path, store: BlobStore, *, bars: Bars = no_bars) -> Created:
    """Back up the database at `url` and `data_dir`'s secrets and certificates to `store`."""
    began = time.monotonic()
    data = files.collect(data_dir)
    with tempfile.TemporaryDirectory(prefix="fieldline-backup-") as tmp:
        dump_file = Path(tmp) / DUMP
        taken = await _dump(url, dump_file, data, bars)
        with bars("Storing", None):
            await asyncio.to_thread(stored.write, store, taken, dump_file, data.tar)
    finished = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await backups.record_backup(
            conn,
            backups.Taken(
                id=taken.id,
                location=store.url,
                started_at=taken.created_at,
                finished_at=finished,
                bytes=taken.size,
                tables=len(taken.tables),
                rows=taken.rows,
            ),
        )
    seconds = time.monotonic() - began
    log.info(
        "backup taken",
        extra={
            "backup": taken.id,
            "location": store.url,
            "bytes": taken.size,
            "tables": len(taken.tables),
            "rows": taken.rows,
            "seconds": round(seconds, 2),
        },
    )
    return Created(taken, store.url, seconds)


async def _dump(url: str, target: Path, data: files.DataFiles, bars: Bars) -> Manifest:
    """Dump the database into `target` and measure it, both in one snapshot."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await conn.set_isolation_level(IsolationLevel.REPEATABLE_READ)
        await conn.set_read_only(True)
        async with conn.transaction():
            cursor = conn.cursor(row_factory=tuple_row)
            await cursor.execute(
                "SELECT pg_export_snapshot(), now(), current_database(),"
                " current_setting('server_version'),"
                " (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')"
            )
            row = await cursor.fetchone()
            assert row is not None
            snapshot, moment, database, server_version, timescaledb = row
            names = await manifest.tables(conn)
            await manifest.stable_text(conn)
            with bars("Backing up (dump and checksums)", 2 * len(names)) as bar:
                dumping = asyncio.create_task(
                    asyncio.to_thread(
                        dump.dump, url, snapshot, target, on_table=lambda _t: bar.advance()
                    )
                )
                try:
                    sums = await manifest.measure(conn, names, on_table=lambda _t: bar.advance())
                finally:
                    # The snapshot must outlive pg_dump's import of it: the transaction
                    # ends only once pg_dump has.
                    await asyncio.wait([dumping])
                dumping.result()
    size, sha256 = await asyncio.to_thread(stored.digest, target)
    return Manifest(
        id=stored.new_id(moment),
        created_at=moment.astimezone(UTC),
        fieldline_version=fieldline.__version__,
        server_version=server_version,
        database=database,
        timescaledb=timescaledb,
        tables=tuple(sums),
        dump=Part(DUMP, size, sha256),
        files=Part(FILES, len(data.tar), hashlib.sha256(data.tar).hexdigest()),
        data_files=data.names,
    )
