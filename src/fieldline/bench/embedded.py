"""Scenario 7: sustained ingest through `fieldline up` on its embedded defaults.

One `fieldline up` (API, worker and, with `--broker amqtt`, the in-process amqtt
broker with ingest as its child process; with `--broker mosquitto`, ingest in
process and a managed Mosquitto child) on the embedded PostgreSQL, exactly as
the README's quick start runs it. The
fleet is registered through the API; the load and the counting are those of
the ingest scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import httpx

from fieldline.bench.deployment import metric_total
from fieldline.bench.ingest import IDLE_LIMIT_S, POLL_S
from fieldline.bench.load import METRICS_PER_MESSAGE, LoadPlan, generate
from fieldline.bench.local_up import ADMIN_PASSWORD, LocalUp, register_devices, start_up, stop_up
from fieldline.bench.report import Result, Table, common_options, parse_settings, publish
from fieldline.bench.usage import Usage, commanded, named, pids, tree


@dataclass
class EmbeddedOptions:
    broker: str = "amqtt"
    devices: int = 100
    rate: float = 3_000.0
    duration: float = 30.0
    processes: int = 2
    directory: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


async def run(options: EmbeddedOptions) -> Result:
    directory = options.directory or Path(tempfile.mkdtemp(prefix="fieldline-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    result = Result(
        scenario="embedded",
        params={
            "broker": options.broker,
            "devices": options.devices,
            "offered_msg_per_s": options.rate,
            "duration_s": options.duration,
            "load_processes": options.processes,
        },
    )
    up = await asyncio.to_thread(start_up, directory, broker=options.broker, env=options.env)
    try:
        devices = await register_devices(up.api, ADMIN_PASSWORD, "emb", options.devices)
        usage = Usage()
        usage.watch("fieldline up", pids(up.process.pid))
        if options.broker == "mosquitto":
            usage.watch("mosquitto", named(up.process.pid, "mosquitto"))
        else:
            usage.watch("ingest (child of up)", commanded(up.process.pid, "ingest"))
        usage.watch("postgresql", tree(up.postgres_pid()))
        plan = LoadPlan(
            devices=devices,
            rate=options.rate,
            duration=options.duration,
            mqtt_port=up.mqtt_port,
            processes=options.processes,
            run="e",
        )
        usage.start()
        load = await generate(plan)
        stored, done_at = await _wait_stored(up, load.acknowledged)
        usage.stop()
    finally:
        await stop_up(up, 60)
        if options.directory is None:
            shutil.rmtree(directory, ignore_errors=True)
    rate = stored / max(done_at - load.started, 1e-9)
    result.tables.append(
        Table(
            f"fieldline up, {options.broker} broker, embedded PostgreSQL",
            [
                "published",
                "acknowledged",
                "stored",
                "lost",
                "publish msg/s",
                "stored msg/s",
                "points/s",
                "connect failures",
            ],
            [
                [
                    load.published,
                    load.acknowledged,
                    stored,
                    load.acknowledged - stored,
                    load.publish_rate,
                    rate,
                    rate * METRICS_PER_MESSAGE,
                    load.connect_failures,
                ]
            ],
        )
    )
    result.tables.append(usage.table())
    result.data.update(
        published=load.published, acknowledged=load.acknowledged, stored=stored, rate=rate
    )
    return result


async def _wait_stored(up: LocalUp, expected: int) -> tuple[int, float]:
    """Readings stored (from /metrics) once all are or none arrive for a while, and when."""
    last, last_change = -1.0, time.monotonic()
    done_at = time.time()
    async with httpx.AsyncClient(base_url=up.api, timeout=10) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                text = (await http.get("/metrics")).text
                value = metric_total(text, "fieldline_readings_stored_total")
                if value != last:
                    last, last_change, done_at = value, time.monotonic(), time.time()
            if last >= expected or time.monotonic() - last_change > IDLE_LIMIT_S:
                return int(last), done_at
            await asyncio.sleep(POLL_S)


@click.command("embedded")
@click.option("--broker", type=click.Choice(["amqtt", "mosquitto"]), default="amqtt")
@click.option("--devices", default=100, show_default=True)
@click.option("--rate", default=3000.0, show_default=True, help="Messages/s offered, in all.")
@click.option("--duration", default=30.0, show_default=True, help="Seconds of publishing.")
@common_options(postgres=False)
def command(
    broker: str,
    devices: int,
    rate: float,
    duration: float,
    processes: int,
    keep: Path | None,
    settings: tuple[str, ...],
) -> None:
    """Sustained ingest through `fieldline up`'s in-process amqtt broker."""
    options = EmbeddedOptions(
        broker=broker,
        devices=devices,
        rate=rate,
        duration=duration,
        processes=processes,
        directory=keep,
        env=parse_settings(settings),
    )
    publish(asyncio.run(run(options)))
