"""`fieldline archive`: the Parquet archive of raw points, by hand (the worker runs it
every five minutes when FIELDLINE_ARCHIVE_URL is set)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fieldline.cli.common import data_dir_option, human_size, load, run

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from fieldline.blobs.base import BlobStore
    from fieldline.config import Settings
    from fieldline.storage.db import Row

T = TypeVar("T")

archive_url_option = click.option(
    "--archive-url", metavar="URL", help="[FIELDLINE_ARCHIVE_URL] a directory or s3://bucket/prefix"
)


def _range_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--to",
        "until",
        metavar="DAY",
        help="Last UTC day (2026-12-07), or a time (2026-12-07T13:00Z) the range ends before.",
    )(func)
    return click.option(
        "--from", "since", metavar="DAY", help="First UTC day (or time) of the range."
    )(func)


def _parse(text: str | None, *, end: bool) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not a day (2026-12-07) or time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    date_only = len(text) == 10
    return moment + timedelta(days=1) if end and date_only else moment


def _store(settings: Settings, url: str | None) -> tuple[str, BlobStore]:
    from fieldline.blobs.base import BlobStoreError
    from fieldline.blobs.open import location, open_store

    url = url or settings.archive_url
    if not url:
        raise click.UsageError(
            "no archive: set FIELDLINE_ARCHIVE_URL (a directory or s3://bucket/prefix) "
            "or give --archive-url"
        )
    try:
        return location(url), open_store(url, s3_endpoint_url=settings.s3_endpoint_url)
    except BlobStoreError as exc:
        raise click.ClickException(str(exc)) from exc


@asynccontextmanager
async def _connection(settings: Settings) -> AsyncIterator[AsyncConnection[Row]]:
    """The database `up` uses (also while it runs), migrated, in autocommit mode."""
    import psycopg
    from psycopg.rows import dict_row

    from fieldline.storage.embedded import database
    from fieldline.storage.migrate import migrate

    async with database(settings, command="archive") as db:
        await migrate(db.url)
        conn = await psycopg.AsyncConnection.connect(db.url, autocommit=True, row_factory=dict_row)
        async with conn:
            yield conn


def _store_call(call: Callable[[], T]) -> T:
    from fieldline.blobs.base import BlobStoreError

    try:
        return call()
    except BlobStoreError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def archive() -> None:
    """The Parquet archive: every closed hour of raw points, and daily aggregates."""


@archive.command("run")
@archive_url_option
@data_dir_option
def archive_run(archive_url: str | None, **overrides: Any) -> None:
    """Archive every closed hour not archived yet (or changed by late readings)."""
    from fieldline.archive import run as archiving
    from fieldline.blobs.base import BlobStoreError
    from fieldline.cli.progress import progress
    from fieldline.storage import archive as records
    from fieldline.storage.archive import ArchivedFile
    from fieldline.storage.locks import JobLock, session_job_lock

    settings = load(**overrides)
    target, store = _store(settings, archive_url)

    async def go() -> list[ArchivedFile]:
        async with _connection(settings) as conn, session_job_lock(conn, JobLock.ARCHIVE) as got:
            if not got:
                raise click.ClickException(
                    "another archive run (the worker's?) is under way; try again later"
                )
            now = datetime.now(UTC)
            due = await archiving.due(conn, target, now)
            written: list[ArchivedFile] = []
            with progress("archiving", due.files, unit="files") as bar:

                def done(file: ArchivedFile) -> None:
                    written.append(file)
                    bar.advance()

                try:
                    await archiving.write(conn, store, target, due, done)
                except BlobStoreError as exc:
                    await records.record_run(conn, target, now, written, str(exc))
                    raise click.ClickException(
                        f"{exc} ({len(written)} of {due.files} files written; "
                        "the next run writes the rest)"
                    ) from exc
            await records.record_run(conn, target, now, written, None)
            return written

    written = run(go())
    if not written:
        click.echo(f"nothing to archive: {target} holds every closed hour")
        return
    hours = sum(1 for f in written if f.kind == "points")
    click.echo(
        f"archived {hours} hour(s) and {len(written) - hours} day(s) of aggregates to {target}: "
        f"{sum(f.rows for f in written if f.kind == 'points'):,} points, "
        f"{human_size(sum(f.bytes for f in written))}"
    )


@archive.command("list")
@archive_url_option
@_range_options
@click.option("--json", "as_json", is_flag=True, help="One JSON array, a day each, for scripts.")
def archive_list(
    archive_url: str | None, since: str | None, until: str | None, as_json: bool
) -> None:
    """What the archive holds, a line per day, read from its manifests."""
    import json

    from fieldline.archive.catalog import entries

    settings = load()
    target, store = _store(settings, archive_url)
    found = _store_call(lambda: entries(store, _parse(since, end=False), _parse(until, end=True)))
    if not found and not as_json:
        click.echo(f"{target} holds no archived hours in this range")
        return
    days: dict[str, list[Any]] = {}
    for entry in found:
        row = days.setdefault(f"{entry.start:%Y-%m-%d}", [0, 0, 0, "-", 0])
        if entry.manifest is None or entry.blob is None:
            row[4] += 1
            continue
        if entry.kind == "points":
            row[0] += 1
            row[1] += entry.manifest.rows
        else:
            row[3] = "yes"
        row[2] += entry.manifest.bytes
    if as_json:
        keys = ("day", "hours", "points", "bytes", "daily", "problems")
        rows = [
            dict(zip(keys, [day, h, p, b, d == "yes", n], strict=True))
            for day, (h, p, b, d, n) in days.items()
        ]
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'DAY':<12} {'HOURS':>5} {'POINTS':>14} {'SIZE':>10}  DAILY  PROBLEMS")
    for day, (hours, points, size, daily, problems) in days.items():
        click.echo(
            f"{day:<12} {hours:>5} {points:>14,} {human_size(size):>10}  {daily:<5}  "
            f"{problems or ''}"
        )
    click.echo(f"{len(days)} day(s) in {target}; `{_verify_command(archive_url)}` checks the files")


def _verify_command(archive_url: str | None) -> str:
    """`archive verify` of the archive the user named, to paste as it stands."""
    import shlex

    named = f" --archive-url {shlex.quote(archive_url)}" if archive_url else ""
    return f"fieldline archive verify{named}"


@archive.command("verify")
@archive_url_option
@_range_options
@data_dir_option
def archive_verify(
    archive_url: str | None, since: str | None, until: str | None, **overrides: Any
) -> None:
    """Re-read every file and check it against its manifest (sha256, size, rows), and
    that every file the database recorded as archived is there."""
    from fieldline.archive.catalog import entries
    from fieldline.archive.verify import verify
    from fieldline.cli.progress import progress
    from fieldline.storage import archive as records

    settings = load(**overrides)
    target, store = _store(settings, archive_url)
    start, end = _parse(since, end=False), _parse(until, end=True)

    async def recorded() -> list[str]:
        keys = []
        async with _connection(settings) as conn:
            for kind in (records.POINTS, records.DAILY):
                files = await records.archived(conn, target, kind, start, end)
                keys += [file.key for file in files.values()]
        return keys

    try:
        keys = run(recorded())
    except click.ClickException as exc:
        # An archive another instance wrote can be checked without a database here.
        click.echo(f"no database ({exc.message}): checking the files alone", err=True)
        keys = []
    found = _store_call(lambda: entries(store, start, end))
    with progress("verifying", len(found), unit="files") as bar:
        checked = _store_call(lambda: verify(store, found, keys, lambda _entry: bar.advance()))
    for problem in checked.problems:
        click.echo(f"BAD  {problem.key}: {problem.reason}", err=True)
    summary = (
        f"{checked.files} file(s), {checked.rows:,} rows, {human_size(checked.bytes)} in {target}"
    )
    if checked.problems:
        raise click.ClickException(f"{len(checked.problems)} problem(s) among {summary}")
    click.echo(f"all good: {summary} match their manifests")


@archive.command("import")
@archive_url_option
@_range_options
@data_dir_option
def archive_import(
    archive_url: str | None, since: str | None, until: str | None, **overrides: Any
) -> None:
    """Load archived hours back into the database (after retention dropped them, or into
    a new instance); points already there are not added twice."""
    from fieldline.archive.catalog import entries
    from fieldline.archive.load import ArchiveDamaged, Imported, import_hours
    from fieldline.cli.progress import progress

    settings = load(**overrides)
    target, store = _store(settings, archive_url)
    if since is None or until is None:
        raise click.UsageError("give the range to import: --from DAY --to DAY")
    found = _store_call(lambda: entries(store, _parse(since, end=False), _parse(until, end=True)))
    hours = [entry for entry in found if entry.kind == "points"]
    if not hours:
        raise click.ClickException(f"{target} holds no archived hours from {since} to {until}")

    async def go() -> list[Imported]:
        async with _connection(settings) as conn:
            with progress("importing", len(hours), unit="hours") as bar:
                return await import_hours(conn, store, hours, lambda _hour: bar.advance())

    try:
        done = run(go())
    except ArchiveDamaged as exc:
        raise click.ClickException(
            f"{exc}; nothing of it was imported (`{_verify_command(archive_url)}` lists every"
            " problem)"
        ) from exc
    added = sum(hour.added for hour in done)
    rows = sum(hour.rows for hour in done)
    click.echo(
        f"imported {len(done)} hour(s) from {target}: {added:,} points added, "
        f"{rows - added:,} already there"
    )
