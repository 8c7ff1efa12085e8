"""`fieldline backup create|list|verify` and `fieldline restore` (docs/data.md, "Backups").

Each finds its database as `up` does (DATABASE_URL, or `--data-dir`'s embedded server,
also while `up` runs there) and its backups at FIELDLINE_BACKUP_URL (default
`<data_dir>/backups`). `create` and `verify` take the worker's job locks, so a backup is
never taken or checked twice at once.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import click

from fieldline.cli.common import data_dir_option, human_size, load, run

if TYPE_CHECKING:
    from fieldline.blobs.base import BlobStore
    from fieldline.config import Settings
    from fieldline.storage.locks import JobLock

_BACKUP_ID = re.compile(r"^fieldline-\d{8}T\d{6}\.\d{3}Z$")


@click.group()
def backup() -> None:
    """Back up the database and the data directory's secrets; list and verify backups."""


@backup.command()
@data_dir_option
def create(**overrides: Any) -> None:
    """Take a backup now (the worker takes one a day)."""
    from fieldline.backup.create import create as create_backup
    from fieldline.cli.progress import progress
    from fieldline.storage.embedded import database
    from fieldline.storage.locks import JobLock

    settings = load(**overrides)
    store = _store(settings.backup_location, settings)

    async def take() -> None:
        async with database(settings, command="backup") as db, _holding(db.url, JobLock.BACKUP):
            made = await create_backup(db.url, settings.data_dir, store, bars=progress)
        taken = made.manifest
        click.echo(
            f"backup {taken.id} written to {made.location}: {len(taken.tables)} tables, "
            f"{taken.rows:,} rows, {human_size(taken.size)}, in {made.seconds:.1f} s"
        )
        if taken.data_files:
            click.echo(f"with {', '.join(taken.data_files)} (keep this location private)")

    _run(take())


@backup.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@data_dir_option
def list_backups(as_json: bool, **overrides: Any) -> None:
    """The backups at FIELDLINE_BACKUP_URL, oldest first."""
    import json

    from fieldline.backup import stored

    settings = load(**overrides)
    store = _store(settings.backup_location, settings)
    found = _call(stored.listed, store)
    if as_json:
        rows = [
            {
                "backup": each.id,
                "taken_at": each.taken_at.isoformat(),
                "bytes": each.bytes,
                "complete": each.complete,
            }
            for each in found
        ]
        click.echo(json.dumps(rows, indent=1))
        return
    if not found:
        click.echo(f"no backups in {store.url}")
        return
    click.echo(f"{'backup':<31} {'taken (UTC)':<20} {'size':>10}  state")
    for each in found:
        state = "complete" if each.complete else "incomplete (never finished)"
        click.echo(
            f"{each.id:<31} {each.taken_at:%Y-%m-%d %H:%M:%S} {human_size(each.bytes):>10}  {state}"
        )


@backup.command()
@click.argument("backup_id", metavar="[BACKUP]", required=False)
@data_dir_option
def verify(backup_id: str | None, **overrides: Any) -> None:
    """Restore a backup (the newest by default) into a scratch database and check every
    table's rows against its manifest; exit 1 when it does not match."""
    from fieldline.backup.verify import verify as verify_backup
    from fieldline.cli.progress import progress
    from fieldline.storage.embedded import database
    from fieldline.storage.locks import JobLock

    settings = load(**overrides)
    store = _store(settings.backup_location, settings)

    async def check() -> None:
        async with (
            database(settings, command="backup verify") as db,
            _holding(db.url, JobLock.BACKUP_VERIFY),
        ):
            done = await verify_backup(db.url, store, backup_id, bars=progress)
        checked = done.manifest
        if not done.ok:
            raise click.ClickException(
                f"backup {checked.id} FAILED verification:\n  " + "\n  ".join(done.problems)
            )
        click.echo(
            f"backup {checked.id} verified: restored into a scratch database, "
            f"{len(checked.tables)} tables and {checked.rows:,} rows match its manifest "
            f"({done.seconds:.1f} s)"
        )

    _run(check())


@click.command()
@click.argument("source")
@click.option(
    "--force",
    is_flag=True,
    help="Drop everything in a database that is not empty, and replace the data "
    "directory's secrets and certificates, before restoring.",
)
@data_dir_option
def restore(source: str, force: bool, **overrides: Any) -> None:
    """Restore a backup: SOURCE is a backup location (its newest backup) or one backup's
    folder in it. Into DATABASE_URL's database or the embedded one of --data-dir (created
    when the directory has none: a new instance)."""
    from fieldline.backup.restore import restore as restore_backup
    from fieldline.backup.restore import target
    from fieldline.cli.progress import progress

    settings = load(**overrides)
    location, _, last = source.rstrip("/").rpartition("/")
    backup_id = last if _BACKUP_ID.match(last) else None
    # A backup's name alone is one in FIELDLINE_BACKUP_URL.
    location = (location or settings.backup_location) if backup_id else source
    store = _store(location, settings)

    async def bring_back() -> None:
        async with target(settings) as db:
            done = await restore_backup(
                db.url, settings.data_dir, store, backup_id, force=force, bars=progress
            )
        chosen = done.manifest
        click.echo(
            f"restored {chosen.id} (taken {chosen.created_at:%Y-%m-%d %H:%M:%S} UTC) into "
            f"{db.label}: {len(chosen.tables)} tables, {chosen.rows:,} rows"
        )
        if done.data_files:
            click.echo(f"and into {settings.data_dir.resolve()}: {', '.join(done.data_files)}")

    _run(bring_back())


def _store(url: str, settings: Settings) -> BlobStore:
    from fieldline.blobs.base import BlobStoreError
    from fieldline.blobs.open import open_store

    try:
        return open_store(url, s3_endpoint_url=settings.s3_endpoint_url)
    except BlobStoreError as exc:
        raise click.ClickException(str(exc)) from exc


@asynccontextmanager
async def _holding(url: str, lock: JobLock) -> AsyncIterator[None]:
    """The worker job's lock for the command's duration; an error when a worker holds it."""
    import psycopg
    from psycopg.rows import dict_row

    from fieldline.storage.locks import session_job_lock

    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn,
        session_job_lock(conn, lock) as got,
    ):
        if not got:
            raise click.ClickException(
                "the worker (or another command) is doing this right now; try again once it "
                "has finished"
            )
        yield


def _run(coro: Any) -> None:
    """Run the command; what goes wrong is its error message, not a traceback."""
    import psycopg

    from fieldline.backup.dump import DumpError
    from fieldline.backup.manifest import ManifestError
    from fieldline.backup.restore import RestoreRefused
    from fieldline.backup.stored import BackupCorrupt, BackupNotFound
    from fieldline.blobs.base import BlobStoreError

    try:
        run(coro)
    except (
        BlobStoreError,
        BackupNotFound,
        BackupCorrupt,
        ManifestError,
        RestoreRefused,
        DumpError,
    ) as exc:
        raise click.ClickException(str(exc)) from exc
    except psycopg.Error as exc:
        raise click.ClickException(f"the database refused: {exc}") from exc


def _call(function: Any, *args: Any) -> Any:
    from fieldline.blobs.base import BlobStoreError

    try:
        return function(*args)
    except BlobStoreError as exc:
        raise click.ClickException(str(exc)) from exc
