"""Sustained ingest through managed Mosquitto: how many messages/s fieldline stores.

Starts `fieldline up` (managed Mosquitto, embedded PostgreSQL) in a temporary
directory, registers a simulated fleet through the API, publishes at a fixed
rate for a fixed time (QoS 1, 6 metrics per message), waits for the backlog to
drain, and reads the stored counts from fieldline's own /metrics. It then
counts the rows in the database to check that nothing was lost or duplicated.

    uv run python benchmarks/ingest.py --devices 200 --rate 25 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from fieldline.client import ApiAccess
from fieldline.ops.sockets import free_port
from fieldline.sim import FleetOptions, run_fleet

ADMIN_PASSWORD = "benchmark-admin-password"


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


async def sample(api: str, until: asyncio.Event, samples: list[tuple[float, float, float]]) -> None:
    async with httpx.AsyncClient(base_url=api) as http:
        while not until.is_set():
            text = (await http.get("/metrics")).text
            samples.append(
                (
                    time.monotonic(),
                    metric(text, "fieldline_readings_stored_total"),
                    metric(text, "fieldline_points_stored_total"),
                )
            )
            await asyncio.sleep(0.5)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    api: str
    mqtt_port: int
    data_dir: Path

    def database_url(self) -> str:
        password = (self.data_dir / "postgres.password").read_text().strip()
        pid_lines = (self.data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
        return f"postgresql://postgres:{password}@127.0.0.1:{pid_lines[3]}/fieldline"


def start(tmp: Path, broker: str) -> Server:
    http_port, mqtt_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    server = Server(
        process=subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "fieldline",
                "up",
                "--data-dir",
                str(tmp / "data"),
                "--http-port",
                str(http_port),
                "--mqtt-port",
                str(mqtt_port),
                "--broker",
                broker,
            ],
            env={
                **os.environ,
                "FIELDLINE_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "FIELDLINE_LOG_LEVEL": os.environ.get("FIELDLINE_LOG_LEVEL", "WARNING"),
                # The load is deliberately above a device's default limit, and a backlog
                # reaches ingest faster than it was sent: measure storage, not rejections.
                "FIELDLINE_DEVICE_RATE_LIMIT": "0",
            },
            stdout=(tmp / "fieldline.log").open("wb"),
            stderr=subprocess.STDOUT,
        ),
        api=f"http://127.0.0.1:{http_port}",
        mqtt_port=mqtt_port,
        data_dir=tmp / "data",
    )
    while True:
        try:
            if httpx.get(f"{server.api}/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.process.poll() is not None:
            raise SystemExit(f"fieldline up exited; see {tmp / 'fieldline.log'}")
        time.sleep(0.2)


async def measure(server: Server, args: argparse.Namespace) -> None:
    options = FleetOptions(
        devices=args.devices,
        rate=args.rate,
        duration=args.duration,
        qos=1,
        mqtt_port=server.mqtt_port,
        api=ApiAccess(url=server.api, username="admin", password=ADMIN_PASSWORD),
        create=True,
        processes=args.processes,
        record_message_ids=False,
        heartbeat_interval=3600,
    )
    samples: list[tuple[float, float, float]] = []
    done = asyncio.Event()
    sampler = asyncio.create_task(sample(server.api, done, samples))
    report = await run_fleet(options)
    sent = report.telemetry_ok
    # Drain: until everything sent is stored, or nothing moved for 10 s.
    while samples[-1][1] < sent and (  # noqa: ASYNC110 - polling the remote process
        len(samples) < 21 or samples[-1][1] != samples[-21][1]
    ):
        await asyncio.sleep(0.5)
    done.set()
    await sampler
    stored = samples[-1][1]
    start = next(s for s in samples if s[1] > 0)
    end = next(s for s in samples if s[1] >= stored)
    elapsed = max(end[0] - start[0], 0.5)
    async with await psycopg.AsyncConnection.connect(server.database_url()) as conn:
        points = (await (await conn.execute("SELECT count(*) FROM telemetry")).fetchone())[0]
        ledger = (await (await conn.execute("SELECT count(*) FROM message_ledger")).fetchone())[0]
    print(
        f"broker {args.broker}; {args.devices} devices x {args.rate:g} msg/s for "
        f"{args.duration:g} s, QoS 1, 6 metrics per message, "
        f"{args.processes} load process(es)"
    )
    print(
        "| sent | stored messages | stored points | lost | duplicated points "
        "| publish msg/s | stored msg/s | stored points/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {sent} | {ledger} | {points} | {sent - ledger} | {points - report.points} "
        f"| {report.publish_rate:,.0f} | {stored / elapsed:,.0f} "
        f"| {samples[-1][2] / elapsed:,.0f} |"
    )
    print(f"(stored over {elapsed:.1f} s, from the first stored message to the last)")


def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fieldline-bench-"))
    server = start(tmp, args.broker)
    try:
        asyncio.run(measure(server, args))
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=60)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rate", type=float, default=25.0, help="messages/s per device")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--broker", default="mosquitto", choices=["mosquitto", "amqtt"])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    main(parser.parse_args())
