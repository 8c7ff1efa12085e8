"""Scenario "connections": ramp to many concurrently connected devices, each publishing slowly.

Every device has its own broker client and role (seeded in bulk before Mosquitto
starts, `connections_seed`), connects with its own username at a paced rate and
then publishes one QoS 1 telemetry message every `publish_interval` seconds
while fieldline ingest and worker store everything. Stage by stage (10,000, then
50,000 devices by default) the scenario reports the ramp (rate, failures, time to
the target), a hold at that size (messages/s published and stored) and the
CPU and memory of every process; at the end, that every acknowledged message
was stored.
"""

from __future__ import annotations

import asyncio
import math
import resource
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import psycopg

from fieldline.bench.connections_load import LoadConfig, LoadGenerator, RampStats, Totals
from fieldline.bench.connections_seed import DEVICE_HASH_ITERATIONS, device_ids, seed_devices
from fieldline.bench.report import Result, Table, percentile
from fieldline.bench.stack import Stack, running_stack
from fieldline.bench.usage import pids

SCENARIO = "connections"
# Connections one listener takes from 127.0.0.1: below the ~28k ephemeral ports per
# destination that /proc/sys/net/ipv4/ip_local_port_range allows by default.
CONNECTIONS_PER_LISTENER = 20_000
STORE_TIMEOUT_S = 120.0

Progress = Callable[[str], None]


async def run_connections(
    directory: Path,
    *,
    targets: list[int],
    publish_interval: float = 10.0,
    hold: float = 30.0,
    connect_rate: float = 2_000.0,
    processes: int = 4,
    keepalive: int = 120,
    api: bool = True,
    progress: Progress | None = None,
) -> Result:
    """Run the scenario in `directory` (kept afterwards); answer the result.

    `api=False` runs without `fieldline api`, seeding the service account it would
    create: at 50,000 devices its start-up reconcile does not finish (see the notes).
    """
    say = progress or (lambda _: None)
    targets = sorted(set(targets))
    fleet = device_ids(targets[-1])
    _raise_file_limit()
    password = ""
    seeded_s = 0.0

    async def seed(stack: Stack) -> None:
        nonlocal password, seeded_s
        began = time.monotonic()
        password = await seed_devices(
            database_url=stack.database_url,
            dynsec_file=stack.broker.directory / "dynamic-security.json",
            devices=fleet,
            service=None if api else ("fieldline-ingest", stack.deployment.service_password),
        )
        seeded_s = time.monotonic() - began
        say(f"seeded {len(fleet):,} devices in {seeded_s:.1f} s")

    result = Result(
        SCENARIO,
        params={
            "targets": targets,
            "publish_interval_s": publish_interval,
            "hold_s": hold,
            "connect_rate": connect_rate,
            "processes": processes,
            "keepalive_s": keepalive,
            "qos": 1,
            "api": api,
        },
    )
    began = time.monotonic()
    listeners = math.ceil(targets[-1] / CONNECTIONS_PER_LISTENER)
    async with running_stack(
        directory, mqtt_listeners=listeners, before_broker=seed, api=api
    ) as stack:
        stack_s = time.monotonic() - began
        await stack.start_ingest()
        await stack.start_worker()
        assert stack.broker.process is not None
        config = LoadConfig(
            devices=fleet,
            password=password,
            ports=[stack.broker.port, *stack.broker.extra_ports],
            publish_interval=publish_interval,
            connect_rate=connect_rate,
            processes=processes,
            keepalive=keepalive,
        )
        stages: list[dict[str, Any]] = []
        async with LoadGenerator(config) as load:
            stack.usage.watch("load generator", pids(*load.pids))
            for target in targets:
                stages.append(await _stage(stack, load, target, hold, say))
            final = await load.stop()
        say(f"stopped: {final.published:,} published, {final.acknowledged:,} acknowledged")
        stored = await _wait_stored(stack.database_url, final.acknowledged)
        broker_files = _open_file_limit(stack.broker.process.pid)
        drift = _api_drift(stack) if api else ["drift not checked"]
    _tabulate(result, stages, final, stored, load.baseline)
    result.data["stages"] = stages
    result.notes += _notes(
        fleet=len(fleet),
        seeded_s=seeded_s,
        stack_s=stack_s,
        drift=drift,
        broker_files=broker_files,
        listeners=listeners,
        stages=stages,
        api=api,
    )
    return result


async def _stage(
    stack: Stack, load: LoadGenerator, target: int, hold: float, say: Progress
) -> dict[str, Any]:
    say(f"ramping to {target:,}")
    stack.usage.start()
    ramp = await load.ramp(target)
    stack.usage.stop()
    ramp_usage = stack.usage.summary()
    connected = await load.totals()
    say(f"{connected.connected:,} connected; holding {hold:.0f} s")
    stack.usage.start()
    stored_before, totals_before, held_from = await _counts(stack, load)
    await asyncio.sleep(hold)
    stored_after, totals_after, held_to = await _counts(stack, load)
    stack.usage.stop()
    window = held_to - held_from
    return {
        "target": target,
        "ramp": _ramp_summary(load.ramp_started, ramp),
        "connected": totals_after.connected,
        "dropped": totals_after.dropped,
        "published_per_s": (totals_after.published - totals_before.published) / window,
        "stored_per_s": (stored_after - stored_before) / window,
        "expected_per_s": totals_before.connected / load.config.publish_interval,
        "generator_rss_mib": totals_after.rss_bytes / 2**20,
        "usage_ramp": ramp_usage,
        "usage_hold": stack.usage.summary(),
    }


async def _counts(stack: Stack, load: LoadGenerator) -> tuple[int, Totals, float]:
    totals = await load.totals()
    return await _stored(stack.database_url), totals, time.monotonic()


async def _stored(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute("SELECT count(*) FROM message_ledger")).fetchone()
    return int(row[0]) if row else 0


async def _wait_stored(database_url: str, expected: int) -> int:
    """The ledger's count once it reaches `expected` (or stops growing short of it)."""
    deadline = time.monotonic() + STORE_TIMEOUT_S
    stored = await _stored(database_url)
    while stored < expected and time.monotonic() < deadline:
        await asyncio.sleep(1)
        stored = await _stored(database_url)
    return stored


def _ramp_summary(started: float, parts: list[RampStats]) -> dict[str, Any]:
    attempted = sum(part.attempted for part in parts)
    connected_at = sorted(t for part in parts for t in part.connected_at)
    latencies = sorted(t for part in parts for t in part.latencies)
    errors: Counter[str] = Counter()
    for part in parts:
        errors.update(part.errors)
    first = started
    took = connected_at[-1] - first if connected_at else 0.0
    per_second = Counter(int(t - first) for t in connected_at)
    return {
        "attempted": attempted,
        "connected": len(connected_at),
        "failures": sum(part.failures for part in parts),
        "errors": dict(errors.most_common(5)),
        "seconds": took,
        "rate": len(connected_at) / took if took else 0.0,
        "peak_rate": max(per_second.values(), default=0),
        "latency_p50_ms": 1000 * (percentile(latencies, 0.5) if latencies else 0.0),
        "latency_p99_ms": 1000 * (percentile(latencies, 0.99) if latencies else 0.0),
        "per_second": [per_second.get(s, 0) for s in range(int(took) + 1)],
    }


def _tabulate(
    result: Result, stages: list[dict[str, Any]], final: Totals, stored: int, baseline: Totals
) -> None:
    ramp = Table(
        "Ramp",
        [
            "target",
            "connected",
            "failures",
            "time to target s",
            "connects/s",
            "peak connects/s in a second",
            "CONNACK p50 ms",
            "CONNACK p99 ms",
        ],
    )
    hold = Table(
        "Holding every connected device",
        [
            "target",
            "connected",
            "dropped",
            "published msg/s",
            "expected msg/s (connected / interval)",
            "stored msg/s",
            "generator MiB per 1,000 connections",
        ],
    )
    for stage in stages:
        r = stage["ramp"]
        reached = stage["connected"] >= stage["target"]
        ramp.rows.append(
            [
                stage["target"],
                stage["connected"],
                r["failures"],
                round(r["seconds"], 1) if reached else f"not reached ({r['seconds']:.1f} s)",
                round(r["rate"]),
                r["peak_rate"],
                round(r["latency_p50_ms"]),
                round(r["latency_p99_ms"]),
            ]
        )
        grown = stage["generator_rss_mib"] - baseline.rss_bytes / 2**20
        hold.rows.append(
            [
                stage["target"],
                stage["connected"],
                stage["dropped"],
                round(stage["published_per_s"]),
                round(stage["expected_per_s"]),
                round(stage["stored_per_s"]),
                round(1000 * grown / max(stage["connected"], 1), 1),
            ]
        )
    columns = ["process"]
    for stage in stages:
        t = f"{stage['target']:,}"
        columns += [f"ramp to {t}: CPU %", f"hold at {t}: CPU %", f"at {t}: peak RSS MiB"]
    usage = Table("CPU (% of one core) and memory", columns)
    for name in stages[0]["usage_hold"]:
        row: list[Any] = [name]
        for stage in stages:
            during, held = stage["usage_ramp"][name], stage["usage_hold"][name]
            row += [
                during["cpu_percent"],
                held["cpu_percent"],
                max(during["peak_rss_mib"], held["peak_rss_mib"]),
            ]
        usage.rows.append(row)
    totals = Table(
        "Everything published, acknowledged and stored",
        ["published", "acknowledged (PUBACK)", "stored (ledger)", "acknowledged, not stored"],
        [[final.published, final.acknowledged, stored, final.acknowledged - stored]],
    )
    result.tables += [ramp, hold, usage, totals]
    result.data["final"] = {
        "published": final.published,
        "acknowledged": final.acknowledged,
        "stored": stored,
        "dropped": final.dropped,
    }


def _notes(
    *,
    fleet: int,
    seeded_s: float,
    stack_s: float,
    drift: list[str],
    broker_files: int | None,
    listeners: int,
    stages: list[dict[str, Any]],
    api: bool,
) -> list[str]:
    notes = [
        f"{fleet:,} devices seeded in {seeded_s:.1f} s with SQL COPY and entries written into "
        "Mosquitto's dynamic-security file before it started; every device has its own client "
        f"and role, but all share one password hash (PBKDF2-SHA512, {DEVICE_HASH_ITERATIONS:,} "
        "iterations, fieldline's production default): the broker still hashes on every CONNECT.",
        "Stack start after seeding (Mosquitto loading the file"
        + (f", `fieldline api` reconciling {fleet:,} devices" if api else ", no `fieldline api`")
        + f"): {stack_s - seeded_s:.1f} s; "
        + ("no drift found." if not drift else "; ".join(drift)),
        f"Mosquitto's open-file limit: {broker_files if broker_files is not None else 'unknown'}"
        f" (max_connections is unset, i.e. unlimited); {listeners} plaintext listener(s), "
        "devices spread over them.",
        "Clean sessions, telemetry only (no status messages), one 1-metric message per device "
        "per interval, first one right after the CONNACK; a failed or dropped device is not "
        "retried.",
    ]
    for stage in stages:
        errors = stage["ramp"]["errors"]
        if errors:
            listed = ", ".join(f"{kind} x{count:,}" for kind, count in errors.items())
            notes.append(f"Connect failures ramping to {stage['target']:,}: {listed}.")
    return notes


def _raise_file_limit() -> None:
    """Sockets are files: the soft limit up to the hard one, for this process and children."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _open_file_limit(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return None


def _api_drift(stack: Stack) -> list[str]:
    log = stack.deployment.components["api"].log.read_text(errors="replace")
    markers = ("broker differed from the registry", "devices refused until")
    return [f"the reconcile logged: {marker}" for marker in markers if marker in log]


@click.command(SCENARIO)
@click.option(
    "--targets",
    default="10000,50000",
    show_default=True,
    help="Connected-device counts to ramp to, in order, comma-separated.",
)
@click.option("--publish-interval", default=10.0, show_default=True, help="Seconds per message.")
@click.option("--hold", default=30.0, show_default=True, help="Seconds held at each target.")
@click.option("--connect-rate", default=2_000.0, show_default=True, help="Connections/s requested.")
@click.option("--processes", default=4, show_default=True, help="Load generator processes.")
@click.option("--keepalive", default=120, show_default=True, help="MQTT keepalive, seconds.")
@click.option(
    "--api/--no-api",
    default=True,
    show_default=True,
    help="Run `fieldline api` (its start-up reconcile lists every broker client: ~45 s at 50,000).",
)
@click.option(
    "--keep-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run in this directory and keep it (logs, database); default: a temporary one.",
)
def command(
    targets: str,
    publish_interval: float,
    hold: float,
    connect_rate: float,
    processes: int,
    keepalive: int,
    api: bool,
    keep_dir: Path | None,
) -> None:
    """Ramp to many concurrently connected devices, each publishing every few seconds."""
    counts = [int(part) for part in targets.split(",") if part.strip()]
    directory = keep_dir or Path(tempfile.mkdtemp(prefix="fieldline-bench-connections-"))
    try:
        result = asyncio.run(
            run_connections(
                directory,
                targets=counts,
                publish_interval=publish_interval,
                hold=hold,
                connect_rate=connect_rate,
                processes=processes,
                keepalive=keepalive,
                api=api,
                progress=lambda line: click.echo(line, err=True),
            )
        )
    finally:
        if keep_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    click.echo(result.markdown())
    click.echo(f"saved {result.save()}", err=True)
