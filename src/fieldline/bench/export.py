"""Scenario `export`: millions of raw points out through `GET /api/v1/export`, as CSV and as
Parquet, with the API's peak memory.

One stack (PostgreSQL, Mosquitto, `fieldline api`); a group of devices whose points
are seeded with SQL into fieldline's own tables (as `queries` seeds them), with units
for some metrics so the export's join has work to do. Then the whole group is exported
once per format by a client that reads as fast as it can, counting rows (CSV lines,
the Parquet file's row count). The API's resident memory is sampled throughout:
streaming keeps it flat whatever the export's size.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import httpx
import psycopg

from fieldline.bench.report import Result, Table, publish
from fieldline.bench.stack import Stack, running_stack
from fieldline.bench.usage import Usage, pids, tree
from fieldline.storage import partitions

GROUP = "bench-export"
DEVICE_TYPE = "bench-sensor"
# name, unit ('' for none), base, amplitude
METRICS = (
    ("temperature", "°C", 20.0, 5.0),
    ("humidity", "%", 55.0, 15.0),
    ("pressure", "hPa", 1013.0, 4.0),
    ("battery_voltage", "V", 3.9, 0.1),
    ("rssi", "", -70.0, 8.0),
)
INTERVAL = timedelta(seconds=10)
FORMATS = ("csv", "parquet")


@dataclass(frozen=True, slots=True)
class Exported:
    format: str
    rows: int
    bytes: int
    seconds: float
    api_peak_rss_mib: float
    api_cpu_percent: float
    postgres_cpu_percent: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


async def run(
    directory: Path, *, points: int, devices: int, postgres_bin: Path | None = None
) -> Result:
    result = Result("export", {"points": points, "devices": devices, "metrics": len(METRICS)})
    async with running_stack(directory, postgres_bin=postgres_bin) as stack:
        started = time.perf_counter()
        seeded, start, end = await seed(stack.database_url, points=points, devices=devices)
        seed_seconds = time.perf_counter() - started
        idle_rss = _api_rss_mib(stack)
        measured = [
            await export(stack, directory, file_format, start, end) for file_format in FORMATS
        ]
    table = Table(
        f"{seeded:,} points of {devices} devices x {len(METRICS)} metrics exported through"
        " GET /api/v1/export",
        [
            "format",
            "rows",
            "bytes",
            "seconds",
            "rows/s",
            "MB/s",
            "api peak RSS MiB",
            "api CPU %",
            "PostgreSQL CPU %",
        ],
    )
    for m in measured:
        table.rows.append(
            [
                m.format,
                m.rows,
                m.bytes,
                round(m.seconds, 1),
                round(m.rows_per_second),
                round(m.bytes / m.seconds / 1e6, 1),
                m.api_peak_rss_mib,
                m.api_cpu_percent,
                m.postgres_cpu_percent,
            ]
        )
    result.tables.append(table)
    result.data = {
        "seeded": seeded,
        "seed_seconds": round(seed_seconds, 1),
        "api_idle_rss_mib": idle_rss,
        "exports": [asdict(m) | {"rows_per_second": m.rows_per_second} for m in measured],
    }
    result.notes += [
        f"Seeded with SQL in {seed_seconds:.0f} s; the API's resident memory before the"
        f" exports: {idle_rss:.1f} MiB.",
        "Each export reads the whole group over the seeded range in one request; the client"
        " (this process) counts CSV lines and reads the Parquet file's row count, and each"
        " must equal the points seeded. RSS sampled every 0.2 s.",
        "PostgreSQL, fieldline api and this client share the machine's cores.",
    ]
    return result


async def seed(database_url: str, *, points: int, devices: int) -> tuple[int, datetime, datetime]:
    """`devices` devices of one group and type, each metric every INTERVAL up to now;
    answer the points stored and the range holding them."""
    per_series = max(1, points // (devices * len(METRICS)))
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - per_series * INTERVAL  # the first point is one interval later
    ids = [f"export-{n:05d}" for n in range(devices)]
    days = sorted({(start + k * timedelta(hours=1)).date() for k in range(per_series // 360 + 2)})
    slots_per_statement = int(timedelta(days=1) / INTERVAL)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO groups (name) VALUES (%s)", (GROUP,))
        await conn.execute(
            "INSERT INTO devices (device_id, device_type, group_id)"
            " SELECT d, %s, (SELECT id FROM groups WHERE name = %s) FROM unnest(%s::text[]) d",
            (DEVICE_TYPE, GROUP, ids),
        )
        await conn.execute(
            "INSERT INTO metric_metadata (device_type, metric, unit, updated_by)"
            " SELECT %s, name, unit, 'bench' FROM unnest(%s::text[], %s::text[]) AS m(name, unit)"
            " WHERE unit <> ''",
            (DEVICE_TYPE, [m[0] for m in METRICS], [m[1] for m in METRICS]),
        )
        await partitions.create_for_days(conn, days)
        # Time-major, as ingest writes it: every device's readings of a moment together.
        for first in range(1, per_series + 1, slots_per_statement):
            last = min(per_series, first + slots_per_statement - 1)
            await conn.execute(
                "INSERT INTO telemetry (time, device_id, metric, value)"
                " SELECT %s::timestamptz + k * %s::interval, d, m.name,"
                " m.base + m.amplitude * sin(k / 1375.099) + random() - 0.5"
                " FROM generate_series(%s::int, %s::int) AS k"
                " CROSS JOIN unnest(%s::text[]) AS d"
                " CROSS JOIN unnest(%s::text[], %s::float8[], %s::float8[])"
                " AS m(name, base, amplitude)",
                (
                    start,
                    INTERVAL,
                    first,
                    last,
                    ids,
                    [m[0] for m in METRICS],
                    [m[2] for m in METRICS],
                    [m[3] for m in METRICS],
                ),
            )
        await conn.execute("VACUUM (ANALYZE) telemetry")
        cursor = await conn.execute("SELECT count(*) FROM telemetry")
        (stored,) = await cursor.fetchone() or (0,)
    return int(stored), start, end + INTERVAL


async def export(
    stack: Stack, directory: Path, file_format: str, start: datetime, end: datetime
) -> Exported:
    """The whole group in one request, read as fast as this client can."""
    usage = Usage(every=0.2)
    usage.watch("api", pids(_api_pid(stack)))
    usage.watch("postgresql", tree(_postmaster_pid(stack)))
    headers = await stack.deployment.admin_headers()
    params = {
        "group": GROUP,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "format": file_format,
    }
    target = directory / f"export.{file_format}"
    size = lines = 0
    async with httpx.AsyncClient(
        base_url=stack.deployment.api_url, headers=headers, timeout=120
    ) as http:
        usage.start()
        began = time.perf_counter()
        with target.open("wb") as file:
            async with http.stream("GET", "/api/v1/export", params=params) as answer:
                if answer.status_code != 200:
                    await answer.aread()
                    raise RuntimeError(f"export failed: {answer.status_code} {answer.text}")
                async for chunk in answer.aiter_raw(1 << 20):
                    file.write(chunk)
                    size += len(chunk)
                    lines += chunk.count(b"\n")
        seconds = time.perf_counter() - began
        usage.stop()
    rows = lines - 1 if file_format == "csv" else _parquet_rows(target)
    target.unlink()
    summary = usage.summary()
    return Exported(
        format=file_format,
        rows=rows,
        bytes=size,
        seconds=seconds,
        api_peak_rss_mib=summary["api"]["peak_rss_mib"],
        api_cpu_percent=summary["api"]["cpu_percent"],
        postgres_cpu_percent=summary["postgresql"]["cpu_percent"],
    )


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def _api_pid(stack: Stack) -> int:
    process = stack.deployment.components["api"].process
    assert process is not None
    return process.pid


def _api_rss_mib(stack: Stack) -> float:
    return stack.deployment.components["api"].rss_mib()


def _postmaster_pid(stack: Stack) -> int:
    return int((stack.postgres.data_dir / "postmaster.pid").read_text().splitlines()[0])


@click.command("export")
@click.option("--points", default=10_000_000, show_default=True, help="Raw points to export.")
@click.option("--devices", default=100, show_default=True, help="Devices of the exported group.")
@click.option("--postgres-bin", type=click.Path(path_type=Path), help="initdb/pg_ctl directory.")
@click.option("--keep-dir", is_flag=True, help="Keep the stack's directory (logs, database).")
def command(points: int, devices: int, postgres_bin: Path | None, keep_dir: bool) -> None:
    """Millions of points exported as CSV and as Parquet: rows/s and the API's peak RSS."""
    directory = Path(tempfile.mkdtemp(prefix="fieldline-bench-"))
    try:
        result = asyncio.run(
            run(directory, points=points, devices=devices, postgres_bin=postgres_bin)
        )
    finally:
        if keep_dir:
            click.echo(f"kept: {directory}", err=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    for exported in result.data["exports"]:
        if exported["rows"] != result.data["seeded"]:
            raise click.ClickException(
                f"{exported['format']} export answered {exported['rows']:,} rows of"
                f" {result.data['seeded']:,}"
            )
    publish(result)
