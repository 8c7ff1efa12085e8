"""Scenario: data over time. Old days of raw points archived, backed up and restored, then
dropped by retention while ingest runs at full speed, and a day imported back.

One stack (PostgreSQL, Mosquitto, `fieldline ingest`), raw points seeded into old
days (past the 30-day retention), then the load (10,000 msg/s by default). A third of
the way in, retention drops the old days as the worker's job does
(`storage.retention.apply`: each partition detached concurrently, then dropped). The
latency of every reading (its send time to the commit of the transaction that stored
it, as the latency scenario measures) is split into before, during and after the drop:
a drop that held ingest back would show in the readings sent around it.

Before the load, the old days are archived to Parquet in a local directory as the
worker's archive job does (`archive.run`), and the archive verified; retention then
drops them only because the archive holds them. Still before the load, the database is
backed up (`backup.create`: pg_dump of a snapshot with its manifest), the backup verified
(restored into a scratch database and compared) and restored into a new database. After
the load, the first old day is imported back from the archive (`archive.load`). Each
step is timed.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import psycopg

from fieldline.archive import run as archiving
from fieldline.archive.catalog import entries
from fieldline.archive.load import import_hours
from fieldline.archive.verify import verify
from fieldline.bench.latency import commit_latencies, percentiles, wait_stored
from fieldline.bench.load import LoadPlan, generate
from fieldline.bench.report import Result, Table, common_options, parse_settings, publish
from fieldline.bench.stack import running_stack
from fieldline.blobs.base import BlobStore
from fieldline.blobs.open import open_store
from fieldline.storage import partitions, retention
from fieldline.storage.partitions import RAW

SEED_DEVICES = 1_000
SEED_METRICS = ("temperature", "humidity", "pressure", "battery", "co2")
KEEP_DAYS = 30
FIRST_OLD_DAY = 40  # the newest seeded day is this many days old


@dataclass
class LifecycleOptions:
    rate: float = 10_000.0
    devices: int = 200
    duration: float = 30.0
    processes: int = 2
    old_days: int = 3
    points_per_day: int = 5_000_000
    postgres_bin: Path | None = None
    directory: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


async def run(options: LifecycleOptions) -> Result:
    directory = options.directory or Path(tempfile.mkdtemp(prefix="fieldline-bench-"))
    result = Result(
        scenario="lifecycle",
        params={
            "rate": options.rate,
            "devices": options.devices,
            "duration_s": options.duration,
            "old_days": options.old_days,
            "points_per_day": options.points_per_day,
            "load_processes": options.processes,
            **options.env,
        },
    )
    try:
        async with running_stack(
            directory, postgres_bin=options.postgres_bin, extra_env=options.env
        ) as stack:
            ids = [f"life-{n:05d}" for n in range(options.devices)]
            credentials = await stack.deployment.register(ids)
            devices = [(device_id, credentials[device_id]["password"]) for device_id in ids]
            seeded = await _seed_old_days(stack.database_url, options)
            store = open_store(str(directory / "archive"))
            archived = await _archive(stack.database_url, store)
            backed_up = await _backup(stack.database_url, directory)
            await stack.start_ingest("a")
            plan = LoadPlan(
                devices=devices,
                rate=options.rate,
                duration=options.duration,
                mqtt_port=stack.mqtt_port,
                processes=options.processes,
                run="r0",
            )
            loading = asyncio.create_task(generate(plan))
            await asyncio.sleep(options.duration / 3)
            drop = await _drop(stack.database_url, store.url)
            load = await loading
            stored = await wait_stored(stack.database_url, plan.run, load.acknowledged)
            imported = await _import_first_day(stack.database_url, store)
            # A stall would delay what was sent just before the drop as well as during it.
            windows = [
                ("before the drop", load.started + 2, drop.started - 1),
                ("from 1 s before to 1 s after", drop.started - 1, drop.ended + 1),
                ("after the drop", drop.ended + 1, load.ended + 1),
            ]
            latency = Table(
                "Publish to queryable (row committed) while retention drops old days, ms",
                ["readings sent", "messages", "p50", "p95", "p99", "p99.9", "max"],
            )
            spread: dict[str, Any] = {}
            for name, since, until in windows:
                values = await commit_latencies(stack.database_url, since, until)
                row = percentiles(values) if values else [float("nan")] * 5
                latency.rows.append([name, len(values), *row])
                spread[name] = dict(zip(["p50", "p95", "p99", "p99.9", "max"], row, strict=True))
    finally:
        if options.directory is None:
            shutil.rmtree(directory, ignore_errors=True)
    dropped = Table(
        "Retention's drop while ingest runs",
        [
            "partitions dropped",
            "points in them",
            "bytes",
            "drop seconds",
            "seconds per partition",
            "offered msg/s",
            "published",
            "stored",
            "lost",
        ],
    )
    dropped.rows.append(
        [
            len(drop.partitions),
            seeded,
            drop.bytes,
            round(drop.ended - drop.started, 3),
            round((drop.ended - drop.started) / max(len(drop.partitions), 1), 3),
            options.rate,
            load.published,
            stored,
            load.acknowledged - stored,
        ]
    )
    archive = Table(
        "The old days archived to Parquet (local disk), verified, and a day imported back",
        ["step", "points", "files", "seconds", "points/s", "bytes", "bytes/point"],
    )
    archive.rows += [
        _step("archive (hours and days)", archived.points, archived.files, archived.seconds,
              archived.bytes),
        _step("verify (re-read, sha256)", archived.points, archived.files,
              archived.verify_seconds, archived.bytes),
        _step("import one day back", imported.points, imported.files, imported.seconds, None),
        ["in PostgreSQL (raw, index included)", seeded, "", "", "", drop.bytes,
         round(drop.bytes / max(seeded, 1), 2)],
    ]  # fmt: skip
    backup = Table(
        "The database backed up, the backup verified and restored (local disk)",
        ["step", "points", "rows in all tables", "seconds", "points/s", "bytes"],
    )
    backup.rows += [
        [step, seeded, backed_up.rows, round(seconds, 1), round(seeded / seconds), size]
        for step, seconds, size in (
            ("backup create (pg_dump and manifest)", backed_up.create_seconds, backed_up.bytes),
            ("backup verify (restore to scratch, compare)", backed_up.verify_seconds, ""),
            ("restore into a new database", backed_up.restore_seconds, ""),
        )
    ]
    result.tables += [archive, backup, dropped, latency]
    result.data.update(
        {"drop": {"partitions": drop.partitions, "seconds": drop.ended - drop.started}},
    )
    result.data["latency_ms"] = spread
    result.notes.append(
        "Each partition is detached concurrently (two transactions that wait for the "
        "transactions using the table, without blocking new ones) and then dropped; "
        "the old days' points were seeded before ingest started."
    )
    return result


async def _seed_old_days(database_url: str, options: LifecycleOptions) -> int:
    """`points_per_day` raw points in each of `old_days` days past the retention."""
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=FIRST_OLD_DAY + n) for n in range(options.old_days)]
    per_series = max(1, options.points_per_day // (SEED_DEVICES * len(SEED_METRICS)))
    step = timedelta(days=1) / per_series
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await partitions.create_for_days(conn, days)
        for day in days:
            await conn.execute(
                "INSERT INTO telemetry (time, device_id, metric, value)"
                # Values as sensors report them: a slow wave with noise, two decimals
                # (a counter would compress to nothing and flatter the archive).
                " SELECT %s::timestamptz + n * %s::interval, 'seed-' || d, m,"
                " round((20 + 5 * sin(n / 50.0 + d) + random())::numeric, 2)::float8"
                " FROM generate_series(0, %s - 1) AS n, generate_series(1, %s) AS d,"
                " unnest(%s::text[]) AS m",
                (_midnight(day), step, per_series, SEED_DEVICES, list(SEED_METRICS)),
            )
        # The rollups ingest would have kept: the archive counts points by them.
        for table, column, width in (
            ("telemetry_hourly", "hour", "1 hour"),
            ("telemetry_daily", "day", "1 day"),
        ):
            await conn.execute(
                f"INSERT INTO {table} (device_id, metric, {column}, count, sum, min, max)"
                " SELECT device_id, metric,"
                f" date_bin('{width}', time, TIMESTAMPTZ '1970-01-01 00:00:00+00'),"
                " count(*), sum(value), min(value), max(value) FROM telemetry"
                " WHERE time < %s GROUP BY 1, 2, 3",
                (_midnight(days[0] + timedelta(days=1)),),
            )
        await conn.execute("VACUUM (ANALYZE) telemetry")
        # The seeded gigabytes on disk now, not in a checkpoint during the load.
        await conn.execute("CHECKPOINT")
    return per_series * SEED_DEVICES * len(SEED_METRICS) * len(days)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Drop:
    started: float
    ended: float
    partitions: list[str]
    bytes: int


async def _drop(database_url: str, archive_target: str) -> _Drop:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        started = time.time()
        (run,) = await retention.apply(conn, {RAW: KEEP_DAYS}, datetime.now(UTC), archive_target)
        if run.held:
            raise RuntimeError(f"retention held {[p.name for p in run.held]}: not archived")
        ended = time.time()
    return _Drop(started, ended, [p.name for p in run.dropped], sum(p.bytes for p in run.dropped))


@dataclass(frozen=True, slots=True)
class _Archived:
    points: int
    files: int
    bytes: int
    seconds: float
    verify_seconds: float


@dataclass(frozen=True, slots=True)
class _BackedUp:
    rows: int
    bytes: int
    create_seconds: float
    verify_seconds: float
    restore_seconds: float


async def _backup(database_url: str, directory: Path) -> _BackedUp:
    """Back up, verify and restore the seeded database as the backup commands do."""
    from fieldline.backup import create, restore, verify  # pg_dump's wrapper, when asked

    store = open_store(str(directory / "backups"))
    started = time.perf_counter()
    created = await create.create(database_url, directory / "data", store)
    create_seconds = time.perf_counter() - started
    started = time.perf_counter()
    checked = await verify.verify(database_url, store)
    verify_seconds = time.perf_counter() - started
    if not checked.ok:
        raise RuntimeError(f"the backup does not verify: {checked.problems[:3]}")
    base, _, _ = database_url.rpartition("/")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("CREATE DATABASE lifecycle_restored")
    try:
        started = time.perf_counter()
        await restore.restore(f"{base}/lifecycle_restored", directory / "restored", store, None)
        restore_seconds = time.perf_counter() - started
    finally:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute("DROP DATABASE IF EXISTS lifecycle_restored WITH (FORCE)")
    return _BackedUp(
        created.manifest.rows,
        created.manifest.size,
        create_seconds,
        verify_seconds,
        restore_seconds,
    )


@dataclass(frozen=True, slots=True)
class _Imported:
    points: int
    files: int
    seconds: float


def _step(name: str, points: int, files: int, seconds: float, size: int | None) -> list[object]:
    return [
        name,
        points,
        files,
        round(seconds, 2),
        round(points / seconds) if seconds else "",
        size if size is not None else "",
        round(size / points, 2) if size and points else "",
    ]


async def _archive(database_url: str, store: BlobStore) -> _Archived:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        started = time.perf_counter()
        due = await archiving.due(conn, store.url, datetime.now(UTC))
        written = await archiving.write(conn, store, store.url, due)
        seconds = time.perf_counter() - started
    started = time.perf_counter()
    checked = await asyncio.to_thread(lambda: verify(store, entries(store)))
    verify_seconds = time.perf_counter() - started
    if checked.problems:
        raise RuntimeError(f"the archive does not verify: {checked.problems[:3]}")
    points = sum(f.rows for f in written if f.kind == "points")
    return _Archived(points, len(written), sum(f.bytes for f in written), seconds, verify_seconds)


async def _import_first_day(database_url: str, store: BlobStore) -> _Imported:
    """The oldest archived day back into PostgreSQL, as `fieldline archive import` does."""
    found = [entry for entry in entries(store) if entry.kind == "points"]
    first = found[0].start
    day = [entry for entry in found if entry.start < first + timedelta(days=1)]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        started = time.perf_counter()
        done = await import_hours(conn, store, day)
        seconds = time.perf_counter() - started
    return _Imported(sum(hour.added for hour in done), len(done), seconds)


@click.command("lifecycle")
@click.option("--rate", default=10_000.0, show_default=True, help="Messages/s offered, in all.")
@click.option("--devices", default=200, show_default=True, help="Devices, each its own connection.")
@click.option("--duration", default=30.0, show_default=True, help="Seconds of publishing.")
@click.option("--old-days", default=3, show_default=True, help="Old days of raw points to drop.")
@click.option(
    "--points-per-day", default=5_000_000, show_default=True, help="Raw points in each old day."
)
@common_options()
def command(
    rate: float,
    devices: int,
    duration: float,
    old_days: int,
    points_per_day: int,
    processes: int,
    postgres_bin: Path | None,
    keep: Path | None,
    settings: tuple[str, ...],
) -> None:
    """Archive, backup and restore of seeded old days, then retention dropping them while
    ingest runs at full speed, and a day imported back."""
    options = LifecycleOptions(
        rate=rate,
        devices=devices,
        duration=duration,
        processes=processes,
        old_days=old_days,
        points_per_day=points_per_day,
        postgres_bin=postgres_bin,
        directory=keep,
        env=parse_settings(settings),
    )
    publish(asyncio.run(run(options)))
