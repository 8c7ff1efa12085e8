"""Scenarios 1 to 3: sustained ingest, the bare-subscriber ceiling and the Node-RED peer.

One run, one broker, one load: the same fleet publishes the same number of
messages at the same rate (QoS 1, 5 metrics each) three times, once for each
consumer, one consumer at a time:

1. the bare subscriber, which only counts (the ceiling);
2. fieldline (`fieldline ingest` and `fieldline worker` as separate processes,
   as docs/deploy.md runs them), counted by what it stored;
3. Node-RED with an MQTT-in node writing to PostgreSQL, as users build it.

A consumer's rate is the messages it consumed divided by the time from the
first publish to its last message: a consumer that keeps up shows the offered
rate, one that falls behind shows the rate at which it drained the backlog.
fieldline's counts come from the database afterwards: lost is acknowledged by
the broker but not stored, duplicated is points stored beyond 5 per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx
import psycopg

from fieldline.bench.counter import BareSubscriber
from fieldline.bench.load import METRICS_PER_MESSAGE, LoadPlan, LoadReport, generate
from fieldline.bench.report import Result, Table, common_options, parse_settings, publish
from fieldline.bench.stack import READER, Stack, running_stack
from fieldline.bench.usage import pids

POLL_S = 0.5
IDLE_LIMIT_S = 15.0  # a consumer that stored nothing new for this long is done


@dataclass
class IngestOptions:
    devices: int = 200
    rate: float = 5_000.0  # messages/s offered, in all
    duration: float = 30.0
    processes: int = 2  # load generator processes
    ingest_instances: int = 1
    ceiling: bool = True
    peer: bool = True
    postgres_bin: Path | None = None
    directory: Path | None = None  # kept afterwards when given
    env: dict[str, str] = field(default_factory=dict)  # extra FIELDLINE_* for ingest


@dataclass
class Phase:
    name: str
    load: LoadReport
    consumed: int
    rate: float  # consumed / (last consumed - first publish)
    # (seconds since the first publish, consumed so far)
    samples: list[tuple[float, int]]
    usage: dict[str, dict[str, float]]
    lost: int | None = None
    duplicated: int | None = None
    points: int | None = None


async def run(options: IngestOptions) -> Result:
    directory = options.directory or Path(tempfile.mkdtemp(prefix="fieldline-bench-"))
    result = Result(
        scenario="ingest",
        params={
            "devices": options.devices,
            "offered_msg_per_s": options.rate,
            "duration_s": options.duration,
            "qos": 1,
            "metrics_per_message": METRICS_PER_MESSAGE,
            "load_processes": options.processes,
            "ingest_instances": options.ingest_instances,
        },
    )
    try:
        async with running_stack(
            directory, postgres_bin=options.postgres_bin, extra_env=options.env
        ) as stack:
            devices = await _register(stack, options.devices)
            phases: list[Phase] = []
            if options.ceiling:
                phases.append(await _bare_phase(stack, devices, options))
            phases.append(await _fieldline_phase(stack, devices, options))
            if options.peer:
                phases.append(await _peer_phase(stack, devices, options))
    finally:
        if options.directory is None:
            shutil.rmtree(directory, ignore_errors=True)
    _tabulate(result, phases, options)
    return result


async def _register(stack: Stack, count: int) -> list[tuple[str, str]]:
    ids = [f"bench-{n:05d}" for n in range(count)]
    credentials = await stack.deployment.register(ids)
    return [(device_id, credentials[device_id]["password"]) for device_id in ids]


def _plan(
    stack: Stack, devices: list[tuple[str, str]], options: IngestOptions, run: str
) -> LoadPlan:
    return LoadPlan(
        devices=devices,
        rate=options.rate,
        duration=options.duration,
        mqtt_port=stack.mqtt_port,
        processes=options.processes,
        run=run,
    )


async def measure(
    name: str,
    stack: Stack,
    plan: LoadPlan,
    consumed: Callable[[], Awaitable[int]],
) -> Phase:
    """Run the load while sampling how much the consumer has taken; wait until it is done."""
    samples: list[tuple[float, float, int]] = []  # (wall clock, monotonic, consumed)
    base = await consumed()
    stack.usage.start()
    load_task = asyncio.create_task(generate(plan))
    while not load_task.done():
        samples.append((time.time(), time.monotonic(), await consumed() - base))
        await asyncio.sleep(POLL_S)
    load = load_task.result()
    target = load.acknowledged
    last_change = time.monotonic()
    while True:
        count = await consumed() - base
        samples.append((time.time(), time.monotonic(), count))
        if count != samples[-2][2]:
            last_change = time.monotonic()
        if count >= target or time.monotonic() - last_change > IDLE_LIMIT_S:
            break
        await asyncio.sleep(POLL_S)
    stack.usage.stop()
    total = samples[-1][2]
    done_at = next(wall for wall, _, count in samples if count >= total)
    rate = total / max(done_at - load.started, 1e-9)
    return Phase(
        name=name,
        load=load,
        consumed=total,
        rate=rate,
        samples=[(round(wall - load.started, 2), count) for wall, _, count in samples],
        usage=stack.usage.summary(),
    )


async def _bare_phase(
    stack: Stack, devices: list[tuple[str, str]], options: IngestOptions
) -> Phase:
    subscriber = BareSubscriber(
        port=stack.mqtt_port, username=READER, password=stack.reader_password
    )
    await subscriber.start()
    stack.usage.watch("bare subscriber", pids(subscriber.pid))
    try:

        async def consumed() -> int:
            return subscriber.counted().messages

        phase = await measure(
            "bare subscriber", stack, _plan(stack, devices, options, "c"), consumed
        )
        counted = subscriber.counted()
        if counted.last:
            phase.rate = counted.messages / max(counted.last - phase.load.started, 1e-9)
    finally:
        await subscriber.stop()
        stack.usage.unwatch("bare subscriber")
    return phase


async def _fieldline_phase(
    stack: Stack, devices: list[tuple[str, str]], options: IngestOptions
) -> Phase:
    instances = [chr(ord("a") + n) for n in range(options.ingest_instances)]
    share = {"FIELDLINE_INGEST_SHARE_GROUP": "fieldline"} if len(instances) > 1 else {}
    for instance in instances:
        await stack.start_ingest(instance, **share)
    await stack.start_worker()

    last: dict[str, float] = dict.fromkeys(instances, 0.0)

    async def consumed() -> int:
        # A busy ingest may answer /metrics late: keep its last count rather than fail.
        for instance in instances:
            with contextlib.suppress(httpx.HTTPError):
                last[instance] = await stack.deployment.metric(
                    f"ingest-{instance}", "fieldline_readings_stored_total"
                )
        return int(sum(last.values()))

    phase = await measure("fieldline", stack, _plan(stack, devices, options, "f"), consumed)
    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        stored = await scalar(conn, "SELECT count(*) FROM message_ledger")
        points = await scalar(conn, "SELECT count(*) FROM telemetry")
    committed = await last_commit(stack.database_url, "message_ledger")
    if committed is not None:
        phase.rate = stored / max(committed - phase.load.started, 1e-9)
    phase.consumed = stored
    phase.points = points
    phase.lost = phase.load.acknowledged - stored
    phase.duplicated = points - stored * METRICS_PER_MESSAGE
    for instance in instances:
        await retire_ingest(stack, instance)
        stack.usage.unwatch(f"fieldline ingest {instance}")
    await stack.stop_component("worker")
    stack.usage.unwatch("fieldline worker")
    return phase


async def retire_ingest(stack: Stack, instance: str) -> None:
    """Stop an ingest instance and end its persistent session, so the broker stops
    queueing for it while the next consumer is measured."""
    await stack.stop_component(f"ingest-{instance}")
    retiring = stack.deployment._component(
        f"retire-{instance}",
        ["ingest", "--retire"],
        f"fieldline ingest {instance} retired",
        FIELDLINE_INGEST_INSTANCE=instance,
    )
    retiring.start()
    await retiring.wait_ready()
    if retiring.process is not None:
        await asyncio.to_thread(retiring.process.wait, 60)


async def _peer_phase(
    stack: Stack, devices: list[tuple[str, str]], options: IngestOptions
) -> Phase:
    from fieldline.bench.nodered import NodeRedPeer

    peer = NodeRedPeer(
        stack.directory / "node-red",
        mqtt_host="127.0.0.1",
        mqtt_port=stack.mqtt_port,
        username=READER,
        password=stack.reader_password,
        database_url=stack.database_url,
    )
    await asyncio.to_thread(peer.install)
    await peer.start()
    stack.usage.watch("node-red", pids(peer.pid))

    async def consumed() -> int:
        # Counting points is cheap; distinct message ids (exact) are counted at the end.
        return await peer.stored_points() // METRICS_PER_MESSAGE

    try:
        phase = await measure("node-red", stack, _plan(stack, devices, options, "n"), consumed)
        phase.consumed = await peer.stored_messages()
        phase.points = await peer.stored_points()
    finally:
        await peer.stop(end_session=True)
        stack.usage.unwatch("node-red")
    phase.lost = phase.load.acknowledged - phase.consumed
    phase.duplicated = phase.points - phase.consumed * METRICS_PER_MESSAGE
    committed = await last_commit(stack.database_url, "nodered_readings")
    if committed is not None:
        phase.rate = phase.consumed / max(committed - phase.load.started, 1e-9)
    return phase


async def last_commit(database_url: str, table: str) -> float | None:
    """When the table's last row became visible: its transaction's commit time."""
    query = f"SELECT extract(epoch FROM max(pg_xact_commit_timestamp(xmin))) FROM {table}"
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute(query.encode())).fetchone()
    return float(row[0]) if row and row[0] is not None else None


async def scalar(conn: psycopg.AsyncConnection[Any], sql: str) -> int:
    row = await (await conn.execute(sql)).fetchone()
    return int(row[0]) if row else 0


def _tabulate(result: Result, phases: list[Phase], options: IngestOptions) -> None:
    ceiling = next((p.rate for p in phases if p.name == "bare subscriber"), None)
    main = Table(
        "Consumers of the same load, one after another, same broker",
        [
            "consumer",
            "published",
            "acknowledged",
            "consumed/stored",
            "lost",
            "duplicated points",
            "publish msg/s",
            "consumed msg/s",
            "points/s",
            "of bare subscriber",
        ],
    )
    for phase in phases:
        main.rows.append(
            [
                phase.name,
                phase.load.published,
                phase.load.acknowledged,
                phase.consumed,
                "-" if phase.lost is None else phase.lost,
                "-" if phase.duplicated is None else phase.duplicated,
                phase.load.publish_rate,
                phase.rate,
                phase.rate * METRICS_PER_MESSAGE,
                f"{phase.rate / ceiling:.0%}" if ceiling else "-",
            ]
        )
    usage = Table(
        "CPU (% of one core) and peak RSS (MiB) while each consumer was measured",
        [
            "process",
            *(f"{phase.name} CPU %" for phase in phases),
            *(f"{phase.name} RSS" for phase in phases),
        ],
    )
    names = sorted({name for phase in phases for name in phase.usage})
    for name in names:
        usage.rows.append(
            [
                name,
                *(phase.usage.get(name, {}).get("cpu_percent", "-") for phase in phases),
                *(phase.usage.get(name, {}).get("peak_rss_mib", "-") for phase in phases),
            ]
        )
    load_cpu = Table(
        "Load generator",
        ["consumer", "processes", "CPU % of one core", "connect failures"],
        [
            [
                phase.name,
                options.processes,
                100 * phase.load.cpu_seconds / max(phase.load.ended - phase.load.started, 1e-9),
                phase.load.connect_failures,
            ]
            for phase in phases
        ],
    )
    result.tables += [main, usage, load_cpu]
    result.data["phases"] = [
        {
            "name": phase.name,
            "published": phase.load.published,
            "acknowledged": phase.load.acknowledged,
            "consumed": phase.consumed,
            "rate": phase.rate,
            "lost": phase.lost,
            "duplicated": phase.duplicated,
            "points": phase.points,
            "published_per_second": phase.load.per_second,
            "consumed_samples": phase.samples,
            "usage": phase.usage,
        }
        for phase in phases
    ]
    result.notes.append(
        "PostgreSQL's RSS sums its processes, so shared buffers are counted more than once."
    )


@click.command("ingest")
@click.option("--devices", default=200, show_default=True, help="Devices, each its own connection.")
@click.option("--rate", default=5000.0, show_default=True, help="Messages/s offered, in all.")
@click.option("--duration", default=30.0, show_default=True, help="Seconds of publishing.")
@click.option(
    "--ingest-instances", default=1, show_default=True, help="`fieldline ingest` processes."
)
@click.option("--ceiling/--no-ceiling", default=True, help="Measure the bare subscriber first.")
@click.option("--peer/--no-peer", default=True, help="Measure Node-RED last (needs node, npm).")
@click.option("--plot", type=click.Path(path_type=Path), help="Write a throughput plot (PNG).")
@common_options()
def command(
    devices: int,
    rate: float,
    duration: float,
    processes: int,
    ingest_instances: int,
    ceiling: bool,
    peer: bool,
    postgres_bin: Path | None,
    keep: Path | None,
    plot: Path | None,
    settings: tuple[str, ...],
) -> None:
    """Sustained ingest, with the bare-subscriber ceiling and the Node-RED peer in one run."""
    options = IngestOptions(
        devices=devices,
        rate=rate,
        duration=duration,
        processes=processes,
        ingest_instances=ingest_instances,
        ceiling=ceiling,
        peer=peer,
        postgres_bin=postgres_bin,
        directory=keep,
        env=parse_settings(settings),
    )
    publish(asyncio.run(run(options)), plot=plot, chart="throughput")
