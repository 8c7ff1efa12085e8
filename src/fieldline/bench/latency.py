"""Scenario 4: publish-to-queryable latency at fixed rates.

The load generator stamps every message with its send time (microseconds, the
reading's `timestamp`); PostgreSQL records when each row became visible to
queries: the commit time of its transaction (`track_commit_timestamp`, turned
on by the stack). Latency is the difference, per message, on one machine's
clock. fieldline runs as docs/deploy.md deploys it (`fieldline ingest` and
`fieldline worker`), one rate after another against the same stack.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import psycopg

from fieldline.bench.ingest import IDLE_LIMIT_S, POLL_S
from fieldline.bench.load import LoadPlan, generate
from fieldline.bench.report import (
    Result,
    Table,
    common_options,
    parse_settings,
    percentile,
    publish,
)
from fieldline.bench.stack import running_stack

QUANTILES_KEPT = 1_000  # points of each distribution kept in the JSON, for plots


@dataclass
class LatencyOptions:
    rates: list[float] = field(default_factory=lambda: [1_000.0, 10_000.0])
    devices: int = 200
    duration: float = 20.0
    processes: int = 2
    warmup: float = 2.0  # seconds at the start of each run left out
    postgres_bin: Path | None = None
    directory: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


async def run(options: LatencyOptions) -> Result:
    directory = options.directory or Path(tempfile.mkdtemp(prefix="fieldline-bench-"))
    result = Result(
        scenario="latency",
        params={
            "rates": options.rates,
            "devices": options.devices,
            "duration_s": options.duration,
            "warmup_s": options.warmup,
            "load_processes": options.processes,
            **options.env,
        },
    )
    table = Table(
        "Publish to queryable (row committed), milliseconds",
        ["offered msg/s", "messages", "p50", "p95", "p99", "p99.9", "max", "lost"],
    )
    runs: list[dict[str, Any]] = []
    try:
        async with running_stack(
            directory, postgres_bin=options.postgres_bin, extra_env=options.env
        ) as stack:
            ids = [f"lat-{n:05d}" for n in range(options.devices)]
            credentials = await stack.deployment.register(ids)
            devices = [(device_id, credentials[device_id]["password"]) for device_id in ids]
            await stack.start_ingest("a")
            await stack.start_worker()
            for number, rate in enumerate(options.rates):
                plan = LoadPlan(
                    devices=devices,
                    rate=rate,
                    duration=options.duration,
                    mqtt_port=stack.mqtt_port,
                    processes=options.processes,
                    run=f"l{number}",
                )
                load = await generate(plan)
                stored = await wait_stored(stack.database_url, plan.run, load.acknowledged)
                latencies = await commit_latencies(
                    stack.database_url, load.started + options.warmup, load.ended + 1
                )
                row = percentiles(latencies)
                table.rows.append([rate, len(latencies), *row, load.acknowledged - stored])
                runs.append(
                    {
                        "rate": rate,
                        "published": load.published,
                        "acknowledged": load.acknowledged,
                        "stored": stored,
                        "percentiles_ms": dict(
                            zip(["p50", "p95", "p99", "p99.9", "max"], row, strict=True)
                        ),
                        "latencies_ms": _thin(latencies),
                    }
                )
    finally:
        if options.directory is None:
            shutil.rmtree(directory, ignore_errors=True)
    result.tables.append(table)
    result.data["runs"] = runs
    result.notes.append(
        "Latency runs from the send time the device stamped to the commit of the "
        "transaction that stored the reading (PostgreSQL's commit timestamp)."
    )
    return result


async def wait_stored(database_url: str, run: str, expected: int) -> int:
    """Messages of this run in the ledger, once all are there or none arrive for a while."""
    pattern = f"%-{run}-%"
    last, idle = -1, 0.0
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            row = await (
                await conn.execute(
                    "SELECT count(*) FROM message_ledger WHERE message_id LIKE %s", (pattern,)
                )
            ).fetchone()
            count = int(row[0]) if row else 0
            if count >= expected:
                return count
            idle = idle + POLL_S if count == last else 0.0
            if idle > IDLE_LIMIT_S:
                return count
            last = count
            await asyncio.sleep(POLL_S)


async def commit_latencies(database_url: str, since: float, until: float) -> list[float]:
    """One latency per message sent between `since` and `until` (its `temperature`
    point), sorted, in milliseconds."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        rows = await (
            await conn.execute(
                "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - time) * 1000 "
                "FROM telemetry WHERE metric = 'temperature' "
                "AND time BETWEEN to_timestamp(%s) AND to_timestamp(%s) ORDER BY 1",
                (since, until),
            )
        ).fetchall()
    return [float(row[0]) for row in rows]


def percentiles(values: list[float]) -> list[float]:
    """p50, p95, p99, p99.9 and the maximum of latencies sorted ascending."""
    return [percentile(values, fraction) for fraction in (0.50, 0.95, 0.99, 0.999, 1.0)]


def _thin(values: list[float]) -> list[float]:
    if len(values) <= QUANTILES_KEPT:
        return [round(v, 3) for v in values]
    step = len(values) / QUANTILES_KEPT
    return [round(values[int(n * step)], 3) for n in range(QUANTILES_KEPT)] + [round(values[-1], 3)]


@click.command("latency")
@click.option(
    "--rates", default="1000,10000", show_default=True, help="Offered msg/s, one run each."
)
@click.option("--devices", default=200, show_default=True)
@click.option("--duration", default=20.0, show_default=True, help="Seconds of each run.")
@click.option("--warmup", default=2.0, show_default=True, help="Seconds left out of each run.")
@click.option("--plot", type=click.Path(path_type=Path), help="Write the distribution (PNG).")
@common_options()
def command(
    rates: str,
    devices: int,
    duration: float,
    processes: int,
    warmup: float,
    postgres_bin: Path | None,
    keep: Path | None,
    plot: Path | None,
    settings: tuple[str, ...],
) -> None:
    """Publish-to-queryable latency percentiles at fixed rates."""
    options = LatencyOptions(
        rates=[float(rate) for rate in rates.split(",")],
        devices=devices,
        duration=duration,
        processes=processes,
        warmup=warmup,
        postgres_bin=postgres_bin,
        directory=keep,
        env=parse_settings(settings),
    )
    publish(asyncio.run(run(options)), plot=plot, chart="latency")
