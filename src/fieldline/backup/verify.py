"""Proving a backup restores: into a scratch database on the same server, every table's
rows counted and checksummed against the manifest, the scratch database dropped, and the
outcome recorded in the database (`backup_verifications`) for the metrics and the
dashboard.

A backup whose files are not what the manifest says (a flipped byte) fails before any
restore: its sha256 tells. One whose dump is intact but does not restore, or restores
other rows than were dumped, fails on the restore or the comparison. Either way the
verification says why, and is recorded as failed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import tuple_row

from fieldline.backup import Bars, dump, files, manifest, no_bars, stored
from fieldline.backup.manifest import Manifest
from fieldline.backup.restore import restore_database
from fieldline.blobs.base import BlobStore
from fieldline.storage import backups

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verification:
    manifest: Manifest
    location: str
    ok: bool
    problems: list[str]
    seconds: float


async def verify(
    url: str, store: BlobStore, backup_id: str | None = None, *, bars: Bars = no_bars
) -> Verification:
    """Verify `backup_id` (the newest when None) of `store` on the server of `url`, and
    record the outcome there. The caller holds JobLock.BACKUP_VERIFY: scratch databases
    an interrupted verification left behind are dropped here."""
    began = time.monotonic()
    chosen = await asyncio.to_thread(stored.manifest, store, backup_id)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        own = (await (await conn.execute("SELECT current_database()")).fetchone() or ("",))[0]
        await _drop_leftovers(conn, own)
        scratch = f"{own[:40]}_verify_{secrets.token_hex(4)}"
        with tempfile.TemporaryDirectory(prefix="fieldline-verify-") as tmp:
            try:
                with bars(f"Fetching {chosen.id}", None):
                    dump_file, tar = await asyncio.to_thread(stored.fetch, store, chosen, Path(tmp))
                files.read(tar)
            except (stored.BackupCorrupt, ValueError) as exc:
                problems = [str(exc)]
            else:
                await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
                try:
                    problems = await _restore_and_compare(
                        _url_of(url, scratch), chosen, dump_file, bars
                    )
                finally:
                    await conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(scratch)
                        )
                    )
        seconds = time.monotonic() - began
        outcome = Verification(chosen, store.url, not problems, problems, seconds)
        await backups.record_verification(
            conn,
            backups.Verified(
                backup_id=chosen.id,
                location=store.url,
                verified_at=datetime.now(UTC),
                ok=outcome.ok,
                seconds=seconds,
                problem="; ".join(problems) or None,
            ),
        )
    (log.info if outcome.ok else log.error)(
        "backup verified" if outcome.ok else "backup failed verification",
        extra={
            "backup": chosen.id,
            "location": store.url,
            "problems": problems,
            "seconds": round(seconds, 2),
        },
    )
    return outcome


async def _restore_and_compare(
    url: str, chosen: Manifest, dump_file: Path, bars: Bars
) -> list[str]:
    tables = len(chosen.tables)
    with bars(f"Verifying {chosen.id} (restore and checksums)", 2 * tables) as bar:
        try:
            await restore_database(url, chosen, dump_file, on_table=lambda _t: bar.advance())
        except dump.DumpError as exc:
            return [f"the dump does not restore: {exc}"]
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as restored:
            await manifest.stable_text(restored)
            names = await manifest.tables(restored)
            found = await manifest.measure(restored, names, on_table=lambda _t: bar.advance())
    return manifest.differences(chosen.tables, found)


async def _drop_leftovers(conn: psycopg.AsyncConnection[object], own: str) -> None:
    """Scratch databases of this database's verifications that were cut short."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (f"{own[:40]}_verify_",)
    )
    for (name,) in await cursor.fetchall():
        log.warning("dropping a scratch database left behind", extra={"database": name})
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _url_of(url: str, database: str) -> str:
    """`url` with another database name."""
    return make_conninfo("", **{**conninfo_to_dict(url), "dbname": database})
