"""Scenario `queries`: the read path over seeded history, under concurrent HTTP load.

History is written straight into fieldline's own tables with SQL (`INSERT ... SELECT
generate_series`), in the order ingest writes it (time-major, every device's
readings interleaved), into the daily partitions fieldline itself creates; the
fleet's latest values go to `telemetry_latest`. Then each query runs for a fixed
time at each concurrency level against `fieldline api`:

- `latest`: latest values of the whole fleet, one page (`GET /api/v1/telemetry/latest`);
- `chart`: a bucketed chart of the long-history device over its whole range;
- `raw`: one page of raw readings of that device, at a random place in its history.

The issue's full scale is 1,000 devices x 7 days at 10 s (302 M points): hours of
seeding on a 2-core machine. The defaults seed 1,000 devices x 7 days at 60 s
(50 M points) and the one long device at full scale (30 days at 10 s, 1.3 M points);
`--history-interval 10` asks for the full scale.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx
import psycopg

from fieldline.bench.report import Result, Table, percentile
from fieldline.bench.stack import Stack, running_stack
from fieldline.bench.usage import Usage, pids, tree
from fieldline.storage import partitions

GROUP = "bench-fleet"
LONG_DEVICE = "bench-long"
# name, base, daily amplitude: values that look like a sensor's, so charts look like charts
METRICS = (
    ("temperature", 20.0, 5.0),
    ("humidity", 55.0, 15.0),
    ("pressure", 1013.0, 4.0),
    ("battery_voltage", 3.9, 0.1),
    ("rssi", -70.0, 8.0),
)
CHART_METRIC = "temperature"
RAW_PAGE = 1000
QUERIES = ("latest", "chart", "raw")


@dataclass(frozen=True, slots=True)
class Scale:
    devices: int = 10_000  # with latest values; the `latest` query asks for all of them
    history_devices: int = 1_000  # the first ones of the fleet also get history
    history_days: int = 7
    history_interval: int = 60  # seconds between a history device's messages
    long_days: int = 30  # one more device, outside the fleet, with a long dense history
    long_interval: int = 10
    chart_bucket: str = "1h"

    def check(self) -> None:
        if self.history_devices > self.devices:
            raise click.BadParameter("--history-devices cannot exceed --devices")
        if self.history_interval % self.long_interval:
            raise click.BadParameter("--history-interval must be a multiple of --long-interval")
        if self.history_days > self.long_days:
            raise click.BadParameter("--history-days cannot exceed --long-days")

    @property
    def history_points(self) -> int:
        per_device = self.history_days * 86_400 // self.history_interval
        return self.history_devices * per_device * len(METRICS)

    @property
    def long_points(self) -> int:
        return self.long_days * 86_400 // self.long_interval * len(METRICS)


DEFAULT = Scale()


def fleet_ids(count: int) -> list[str]:
    return [f"bench-{number:05d}" for number in range(count)]


# --- seeding -------------------------------------------------------------------------

# One day of history in one statement, time-major like ingest writes it: for each slot
# of the history interval, every history device, and the long device's readings of
# the interval ending at that slot. No ORDER BY: the nested loop already yields this
# order, without a sort.
_SEED_DAY = """
INSERT INTO telemetry (time, device_id, metric, value)
SELECT s.time, s.device_id, m.name,
       m.base + m.amplitude * sin(extract(epoch FROM s.time) / 13750.99) + random() - 0.5
FROM generate_series(%(first)s::timestamptz, %(last)s::timestamptz, %(step)s::interval) AS t
CROSS JOIN LATERAL (
    SELECT d AS device_id, t AS time FROM unnest(%(devices)s::text[]) AS d
    WHERE t > %(history_first)s::timestamptz
    UNION ALL
    SELECT %(long)s, t - j * %(long_step)s::interval
    FROM generate_series(%(per_slot)s - 1, 0, -1) AS j
    WHERE t - j * %(long_step)s::interval >= %(long_first)s::timestamptz
) AS s
CROSS JOIN unnest(%(names)s::text[], %(bases)s::float8[], %(amplitudes)s::float8[])
    AS m(name, base, amplitude)
"""

_SEED_ROLLUPS = """
INSERT INTO telemetry_hourly (device_id, metric, hour, count, sum, min, max)
SELECT device_id, metric, date_bin('1 hour', time, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
       count(*), sum(value), min(value), max(value)
FROM telemetry GROUP BY 1, 2, 3;
INSERT INTO telemetry_daily (device_id, metric, day, count, sum, min, max)
SELECT device_id, metric, date_bin('1 day', hour, TIMESTAMPTZ '1970-01-01 00:00:00+00'),
       sum(count), sum(sum), min(min), max(max)
FROM telemetry_hourly GROUP BY 1, 2, 3
"""


@dataclass(frozen=True, slots=True)
class Seeded:
    end: datetime  # the newest reading of every series
    points: int
    insert_seconds: float
    vacuum_seconds: float


async def seed(database_url: str, scale: Scale, *, now: datetime, workers: int = 2) -> Seeded:
    """Registry rows, latest values and history, as if ingest had stored them."""
    end = now.replace(second=0, microsecond=0)
    long_first = end - timedelta(days=scale.long_days) + timedelta(seconds=scale.long_interval)
    history_first = end - timedelta(days=scale.history_days)
    started = time.monotonic()
    fleet = fleet_ids(scale.devices)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await _seed_registry(conn, fleet, end)
        days = (end.date() - long_first.date()).days + 1
        await partitions.create_for_days(
            conn, [long_first.date() + timedelta(days=n) for n in range(days)]
        )
    jobs: asyncio.Queue[date] = asyncio.Queue()
    day = long_first.date()
    while day <= end.date():
        jobs.put_nowait(day)
        day += timedelta(days=1)
    history = fleet[: scale.history_devices]

    async def work() -> int:
        inserted = 0
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            while not jobs.empty():
                inserted += await _seed_day(
                    conn, scale, jobs.get_nowait(), end, long_first, history_first, history
                )
        return inserted

    points = sum(await asyncio.gather(*(work() for _ in range(workers))))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        # The hourly and daily rollups ingest keeps in step with every batch it stores.
        await conn.execute(_SEED_ROLLUPS)
    inserted_at = time.monotonic()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        # A running system's autovacuum has long visited yesterday's partitions; without
        # it the first queries would pay for hint bits and find no visibility map.
        await conn.execute(
            "VACUUM (ANALYZE) telemetry, telemetry_latest, telemetry_hourly, telemetry_daily,"
            " devices"
        )
    return Seeded(end, points, inserted_at - started, time.monotonic() - inserted_at)


async def _seed_registry(
    conn: psycopg.AsyncConnection[Any], fleet: list[str], end: datetime
) -> None:
    names = [name for name, _, _ in METRICS]
    async with conn.transaction():
        row = await (
            await conn.execute(
                "INSERT INTO groups (name, description) VALUES (%s, 'seeded by fieldline bench')"
                " RETURNING id",
                (GROUP,),
            )
        ).fetchone()
        assert row is not None
        await conn.execute(
            "INSERT INTO devices (device_id, group_id, device_type, status, last_seen)"
            " SELECT d, %s, 'bench-sensor', 'online', %s FROM unnest(%s::text[]) AS d",
            (row[0], end, fleet),
        )
        await conn.execute(
            "INSERT INTO devices (device_id, device_type, status, last_seen)"
            " VALUES (%s, 'bench-sensor', 'online', %s)",
            (LONG_DEVICE, end),
        )
        await conn.execute(
            "INSERT INTO telemetry_latest (device_id, metric, time, value)"
            " SELECT d, m, %s, 50 * random() FROM unnest(%s::text[]) AS d"
            " CROSS JOIN unnest(%s::text[]) AS m",
            (end, [*fleet, LONG_DEVICE], names),
        )


async def _seed_day(
    conn: psycopg.AsyncConnection[Any],
    scale: Scale,
    day: date,
    end: datetime,
    long_first: datetime,
    history_first: datetime,
    history: list[str],
) -> int:
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    step = timedelta(seconds=scale.history_interval)
    # Slots of the history interval, aligned on `end`, that fall on this day.
    first = end - ((end - midnight) // step) * step
    last = min(end, midnight + timedelta(days=1) - timedelta(microseconds=1))
    first = max(first, end - ((end - long_first) // step) * step)
    cursor = await conn.execute(
        _SEED_DAY,
        {
            "first": first,
            "last": last,
            "step": step,
            "devices": history,
            "history_first": history_first,
            "long": LONG_DEVICE,
            "long_step": timedelta(seconds=scale.long_interval),
            "per_slot": scale.history_interval // scale.long_interval,
            "long_first": long_first,
            "names": [name for name, _, _ in METRICS],
            "bases": [base for _, base, _ in METRICS],
            "amplitudes": [amplitude for _, _, amplitude in METRICS],
        },
    )
    return cursor.rowcount


# --- load ----------------------------------------------------------------------------

PathMaker = Callable[[random.Random], str]


def query_paths(scale: Scale, end: datetime) -> dict[str, PathMaker]:
    """The URL of each query; `raw` pages start at a random place in the long history."""
    last = int(end.timestamp()) + 1
    first = last - scale.long_days * 86_400
    series = f"/api/v1/devices/{LONG_DEVICE}/telemetry?metric={CHART_METRIC}"
    latest = f"/api/v1/telemetry/latest?group={GROUP}&limit={min(scale.devices, 10_000)}"
    chart = f"{series}&start={first}&end={last}&bucket={scale.chart_bucket}&agg=avg"
    # Late enough that a page is always full.
    raw_latest_start = last - RAW_PAGE * scale.long_interval - 1

    def raw(rng: random.Random) -> str:
        start = rng.randint(first, max(first, raw_latest_start))
        return f"{series}&start={start}&end={last}&limit={RAW_PAGE}"

    return {"latest": lambda _: latest, "chart": lambda _: chart, "raw": raw}


@dataclass(frozen=True, slots=True)
class Measurement:
    query: str
    clients: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    # % of one core over the run
    api_cpu: float
    postgres_cpu: float
    client_cpu: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


async def measure(
    stack: Stack,
    headers: dict[str, str],
    query: str,
    path: PathMaker,
    clients: int,
    duration: float,
) -> Measurement:
    """`clients` concurrent clients, each sending its next request when the last answers."""
    latencies: list[float] = []
    errors = 0
    api = stack.deployment.components["api"].process
    assert api is not None
    usage = _run_usage(stack, api.pid)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=stack.deployment.api_url, headers=headers, timeout=60, limits=limits
    ) as http:
        # Open the connections (and warm the API) before the clock starts.
        warm = random.Random(-1)  # noqa: S311 -- request parameters, not secrets
        await asyncio.gather(*(http.get(path(warm)) for _ in range(clients)))

        async def client(number: int) -> None:
            nonlocal errors
            rng = random.Random(number)  # noqa: S311 -- request parameters, not secrets
            while time.monotonic() < deadline:
                sent = time.perf_counter()
                try:
                    answer = await http.get(path(rng))
                except httpx.HTTPError:
                    errors += 1
                    continue
                if answer.status_code == 200:
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1

        usage.start()
        cpu_before = _own_cpu()
        started = time.monotonic()
        deadline = started + duration
        await asyncio.gather(*(client(number) for number in range(clients)))
        elapsed = time.monotonic() - started
        client_cpu = 100 * (_own_cpu() - cpu_before) / elapsed
        usage.stop()
    latencies.sort()
    summary = usage.summary()
    return Measurement(
        query=query,
        clients=clients,
        requests=len(latencies),
        errors=errors,
        seconds=round(elapsed, 2),
        p50_ms=round(1000 * percentile(latencies, 0.50), 1),
        p95_ms=round(1000 * percentile(latencies, 0.95), 1),
        p99_ms=round(1000 * percentile(latencies, 0.99), 1),
        api_cpu=summary["fieldline api"]["cpu_percent"],
        postgres_cpu=summary["postgresql"]["cpu_percent"],
        client_cpu=round(client_cpu, 1),
    )


def _run_usage(stack: Stack, api_pid: int) -> Usage:
    usage = Usage()
    usage.watch("fieldline api", pids(api_pid))
    pid_file = stack.postgres.data_dir / "postmaster.pid"
    usage.watch("postgresql", tree(int(pid_file.read_text().splitlines()[0])))
    return usage


def _own_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


async def check_answers(http: httpx.AsyncClient, paths: dict[str, PathMaker]) -> dict[str, int]:
    """What each query answers once, so a run over empty or wrong data shows."""
    rng = random.Random(0)  # noqa: S311 -- request parameters, not secrets
    latest = (await http.get(paths["latest"](rng))).raise_for_status().json()
    chart = (await http.get(paths["chart"](rng))).raise_for_status().json()
    raw = (await http.get(paths["raw"](rng))).raise_for_status().json()
    return {
        "latest_devices": len(latest["items"]),
        "latest_devices_with_all_metrics": sum(
            len(item["metrics"]) == len(METRICS) for item in latest["items"]
        ),
        "chart_points": len(chart["points"]),
        "raw_points": len(raw["points"]),
    }


# --- the scenario --------------------------------------------------------------------


async def run(
    directory: Path,
    scale: Scale,
    *,
    concurrency: list[int],
    duration: float,
    postgres_bin: Path | None = None,
) -> Result:
    scale.check()
    result = Result(
        "queries",
        {**asdict(scale), "concurrency": concurrency, "duration_s": duration},
    )
    async with running_stack(directory, postgres_bin=postgres_bin) as stack:
        seeded = await seed(stack.database_url, scale, now=datetime.now(UTC))
        paths = query_paths(scale, seeded.end)
        headers = await stack.deployment.admin_headers()
        async with httpx.AsyncClient(
            base_url=stack.deployment.api_url, headers=headers, timeout=60
        ) as http:
            checks = await check_answers(http, paths)
        stack.usage.watch("bench client (this process)", pids(os.getpid()))
        stack.usage.start()
        measurements = []
        for clients in concurrency:
            for query in QUERIES:
                # Tokens live 15 minutes; a fresh one per run outlives any run.
                headers = await stack.deployment.admin_headers()
                measurements.append(
                    await measure(stack, headers, query, paths[query], clients, duration)
                )
        stack.usage.stop()
    result.tables.append(_seed_table(scale, seeded))
    result.tables.append(_latency_table(measurements))
    result.tables.append(stack.usage.table())
    result.data = {
        "seeded": {**asdict(seeded), "end": seeded.end.isoformat()},
        "checks": checks,
        "measurements": [asdict(m) | {"per_second": m.per_second} for m in measurements],
    }
    result.notes += _notes(scale, checks)
    return result


def _seed_table(scale: Scale, seeded: Seeded) -> Table:
    table = Table("Seeded history", ["what", "value"])
    table.rows += [
        ["fleet devices with latest values", scale.devices],
        [
            "history: devices x days @ interval",
            f"{scale.history_devices:,} x {scale.history_days} d @ {scale.history_interval} s",
        ],
        ["long device: days @ interval", f"{scale.long_days} d @ {scale.long_interval} s"],
        ["points stored", seeded.points],
        ["insert s", round(seeded.insert_seconds, 1)],
        ["insert points/s", round(seeded.points / max(seeded.insert_seconds, 1e-9))],
        ["vacuum analyze s", round(seeded.vacuum_seconds, 1)],
    ]
    return table


def _latency_table(measurements: list[Measurement]) -> Table:
    table = Table(
        "Queries under concurrent load",
        [
            "query",
            "clients",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "errors",
            "api CPU %",
            "PostgreSQL CPU %",
            "client CPU %",
        ],
    )
    for m in measurements:
        table.rows.append(
            [
                m.query,
                m.clients,
                round(m.per_second, 1),
                m.p50_ms,
                m.p95_ms,
                m.p99_ms,
                m.errors,
                m.api_cpu,
                m.postgres_cpu,
                m.client_cpu,
            ]
        )
    return table


def _notes(scale: Scale, checks: dict[str, int]) -> list[str]:
    full = Scale(history_interval=10)
    return [
        f"latest: GET /api/v1/telemetry/latest?group={GROUP}&limit={min(scale.devices, 10_000)}"
        f" answered {checks['latest_devices']:,} devices,"
        f" {checks['latest_devices_with_all_metrics']:,} with all {len(METRICS)} metrics.",
        f"chart: {scale.long_days}-day {scale.chart_bucket} avg buckets of one metric of the"
        f" device with {scale.long_days} d @ {scale.long_interval} s history:"
        f" {checks['chart_points']} points.",
        f"raw: one page of {RAW_PAGE} raw readings from a random start in that history"
        f" (answered {checks['raw_points']}).",
        f"Scale used: {scale.history_points + scale.long_points:,} points of history"
        f" ({scale.history_devices:,} devices x {scale.history_days} d at"
        f" {scale.history_interval} s, plus the long device). The issue's full scale,"
        f" {full.history_devices:,} devices x {full.history_days} d at"
        f" {full.history_interval} s, is {full.history_points:,} points"
        " (`--history-interval 10`).",
        "Seeded with SQL into fieldline's tables, time-major as ingest writes it, then"
        " VACUUM ANALYZE (what autovacuum does to settled partitions).",
        "Every process (PostgreSQL, fieldline api, this client) shares the machine;"
        " client CPU is this benchmark process.",
    ]


def _concurrency(value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError as exc:
        raise click.BadParameter("a comma-separated list of client counts, e.g. 1,8,32") from exc
    if not levels or min(levels) < 1:
        raise click.BadParameter("client counts are positive integers")
    return levels


@click.command("queries")
@click.option(
    "--devices",
    default=DEFAULT.devices,
    show_default=True,
    help="Fleet devices with latest values.",
)
@click.option("--history-devices", default=DEFAULT.history_devices, show_default=True)
@click.option("--history-days", default=DEFAULT.history_days, show_default=True)
@click.option(
    "--history-interval",
    default=DEFAULT.history_interval,
    show_default=True,
    help="Seconds between a history device's messages (the issue's full scale: 10).",
)
@click.option("--long-days", default=DEFAULT.long_days, show_default=True)
@click.option("--long-interval", default=DEFAULT.long_interval, show_default=True)
@click.option("--bucket", default=DEFAULT.chart_bucket, show_default=True, help="Chart bucket.")
@click.option("--concurrency", default="1,8,32", show_default=True, help="Client counts.")
@click.option("--duration", default=20.0, show_default=True, help="Seconds per query and level.")
@click.option("--postgres-bin", type=click.Path(path_type=Path), help="initdb/pg_ctl directory.")
@click.option("--keep-dir", is_flag=True, help="Keep the stack's directory (logs, database).")
def command(
    devices: int,
    history_devices: int,
    history_days: int,
    history_interval: int,
    long_days: int,
    long_interval: int,
    bucket: str,
    concurrency: str,
    duration: float,
    postgres_bin: Path | None,
    keep_dir: bool,
) -> None:
    """Latest values, bucketed charts and raw pages over seeded history."""
    scale = Scale(
        devices, history_devices, history_days, history_interval, long_days, long_interval, bucket
    )
    directory = Path(tempfile.mkdtemp(prefix="fieldline-bench-"))
    try:
        result = asyncio.run(
            run(
                directory,
                scale,
                concurrency=_concurrency(concurrency),
                duration=duration,
                postgres_bin=postgres_bin,
            )
        )
    finally:
        if keep_dir:
            click.echo(f"stack directory kept: {directory}", err=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    click.echo(result.markdown())
    click.echo(f"saved {result.save()}", err=True)
