"""Scenario `ota`: a rollout's devices downloading one image at once through one API process,
and the pace at which the worker tells a large target (issue 17, docs/ota.md).

One stack (PostgreSQL, Mosquitto, `fieldline api`; `fieldline worker` for the pace).

Downloads: devices of one model are seeded with SQL, all with one password hashed by
fieldline's own PBKDF2 at the production iteration count; an image of random bytes is
uploaded through the API and the devices are put in a rollout that has told them
already (SQL: the engine is not what is measured here). Then every device downloads
the image at the same moment, each on its own connection, and checks its sha256. Each
mode (whole, and in Range requests: 64 KiB by default, as the simulator asks) has its
own devices and its own image, so each pays what a rollout's first minute pays: a PBKDF2
check of each device's password and the image's pieces read from PostgreSQL once.

Pace: a group of devices is targeted at 100% through the API, once per rate, and the
devices told are counted from `rollout_devices.notified_at` (ota_pacing.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import httpx
import psycopg
from psycopg.types.json import Jsonb

from fieldline.bench.connections_seed import DEVICE_HASH_ITERATIONS
from fieldline.bench.ota_download import Image, download_all
from fieldline.bench.ota_pacing import OtaListener, Pace, pace
from fieldline.bench.report import Result, Table, percentile, publish
from fieldline.bench.stack import Stack, running_stack
from fieldline.bench.usage import Usage, pids, tree
from fieldline.domain.firmware import place
from fieldline.ota.engine import BURST_SECONDS
from fieldline.security.passwords import generate_secret, hash_secret
from fieldline.sim.download import CHUNK_BYTES as SIMULATOR_RANGE_BYTES

MODEL = "bench-ota"
FROM_VERSION = "1.0.0"
PACING_GROUP = "bench-ota-pacing"
PACING_VERSION = "3.0.0"
# whole: the image in one request; range: in Range requests of `range_kib` each
MODES = ("whole", "range")


@dataclass(frozen=True, slots=True)
class Downloaded:
    mode: str
    range_bytes: int | None
    devices: int
    size: int
    requests: int
    failed: int
    errors: list[str]  # the first few distinct reasons
    seconds: float  # until the last device had its image
    p50_s: float
    p95_s: float
    p99_s: float
    max_s: float
    api_idle_rss_mib: float
    api_peak_rss_mib: float
    api_cpu_percent: float
    postgres_cpu_percent: float
    client_cpu_percent: float

    @property
    def megabytes_per_second(self) -> float:
        return (self.devices - self.failed) * self.size / self.seconds / 1e6


@dataclass(frozen=True, slots=True)
class OtaOptions:
    devices: int = 500
    image_kib: int = 2048
    modes: tuple[str, ...] = MODES
    range_kib: int = SIMULATOR_RANGE_BYTES // 1024
    pacing_devices: int = 10_000
    rates: tuple[int, ...] = (600, 6_000)
    duration: float = 60.0


async def run(directory: Path, options: OtaOptions, *, postgres_bin: Path | None = None) -> Result:
    result = Result(
        "ota",
        {
            "devices": options.devices,
            "image_bytes": options.image_kib * 1024,
            "modes": list(options.modes),
            "range_bytes": options.range_kib * 1024,
            "pacing_devices": options.pacing_devices,
            "rates_per_minute": list(options.rates),
            "duration_s": options.duration,
        },
    )
    downloads: list[Downloaded] = []
    paces: list[Pace] = []
    async with running_stack(directory, postgres_bin=postgres_bin) as stack:
        headers = await stack.deployment.admin_headers()
        password = generate_secret()
        secret_hash = (
            await asyncio.to_thread(hash_secret, password, iterations=DEVICE_HASH_ITERATIONS)
        ).encode()
        for number, mode in enumerate(options.modes):
            version = f"2.0.{number}"
            devices = [f"ota-{mode}-{n:05d}" for n in range(options.devices)]
            await seed_devices(stack.database_url, devices, secret_hash=secret_hash)
            image = await upload(stack, headers, version, os.urandom(options.image_kib * 1024))
            await notified_rollout(stack.database_url, version, devices)
            range_bytes = options.range_kib * 1024 if mode == "range" else None
            downloads.append(await download(stack, mode, range_bytes, image, devices, password))
        if options.rates:
            began = time.perf_counter()
            devices = [f"ota-pace-{n:06d}" for n in range(options.pacing_devices)]
            await seed_devices(
                stack.database_url, devices, secret_hash=secret_hash, group=PACING_GROUP
            )
            await upload(stack, headers, PACING_VERSION, os.urandom(64 * 1024))
            seed_s = time.perf_counter() - began
            listener = OtaListener()
            await listener.start(stack)
            await stack.start_worker()
            try:
                for rate in options.rates:
                    paces.append(
                        await pace(
                            stack,
                            headers,
                            listener,
                            group=PACING_GROUP,
                            model=MODEL,
                            version=PACING_VERSION,
                            per_minute=rate,
                            duration=options.duration,
                        )
                    )
            finally:
                await listener.stop()
    _report(result, options, downloads, paces)
    if paces:
        result.notes.append(
            f"The {options.pacing_devices:,} devices of the pace's group were seeded with SQL"
            f" in {seed_s:.1f} s."
        )
    return result


async def seed_devices(
    database_url: str, devices: list[str], *, secret_hash: str, group: str | None = None
) -> None:
    """Devices of MODEL on FROM_VERSION, each with `secret_hash` as its credential."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        if group is not None:
            await conn.execute("INSERT INTO groups (name) VALUES (%s)", (group,))
        await conn.execute(
            "INSERT INTO devices (device_id, device_type, group_id, firmware_version)"
            " SELECT d, %s, (SELECT id FROM groups WHERE name = %s), %s FROM unnest(%s::text[]) d",
            (MODEL, group, FROM_VERSION, devices),
        )
        await conn.execute(
            "INSERT INTO device_credentials (device_id, secret_hash)"
            " SELECT d, %s FROM unnest(%s::text[]) d",
            (secret_hash, devices),
        )


async def upload(stack: Stack, headers: dict[str, str], version: str, data: bytes) -> Image:
    """The image through `POST /api/v1/firmware`, as an operator uploads it."""
    async with httpx.AsyncClient(
        base_url=stack.deployment.api_url, headers=headers, timeout=120
    ) as http:
        answer = await http.post(
            "/api/v1/firmware",
            data={"device_model": MODEL, "version": version},
            files={"file": (f"{MODEL}-{version}.bin", data, "application/octet-stream")},
        )
    if answer.status_code != 201:
        raise RuntimeError(f"firmware upload failed: {answer.status_code} {answer.text}")
    stored = answer.json()
    sha256 = hashlib.sha256(data).hexdigest()
    if stored["sha256"] != sha256 or stored["size_bytes"] != len(data):
        raise RuntimeError(f"the API stored another image: {stored}")
    return Image(f"/firmware/{MODEL}/{version}/binary", len(data), sha256)


async def notified_rollout(database_url: str, version: str, devices: list[str]) -> int:
    """A running rollout of `version` to `devices` that has told every one of them."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "INSERT INTO rollouts (firmware_id, target_devices, stages, max_per_minute,"
            " device_timeout_seconds, settle_seconds, abort_min_finished, abort_failure_percent,"
            " created_by) SELECT id, %s, %s, 60000, 86400, 0, 5, 20, 'bench' FROM firmware"
            " WHERE device_model = %s AND version = %s RETURNING id",
            (devices, Jsonb([{"percentage": 100, "after_seconds": 0}]), MODEL, version),
        )
        row = await cursor.fetchone()
        assert row is not None
        rollout_id = int(row[0])
        await conn.execute(
            "INSERT INTO rollout_devices (rollout_id, device_id, place, state, from_version,"
            " notified_at) SELECT %s, d, p, 'notified', %s, now()"
            " FROM unnest(%s::text[], %s::int[]) AS t(d, p)",
            (
                rollout_id,
                FROM_VERSION,
                devices,
                [place(rollout_id, device) for device in devices],
            ),
        )
    return rollout_id


async def download(
    stack: Stack,
    mode: str,
    range_bytes: int | None,
    image: Image,
    devices: list[str],
    password: str,
) -> Downloaded:
    api = stack.deployment.components["api"]
    assert api.process is not None
    usage = Usage(every=0.2)
    usage.watch("api", pids(api.process.pid))
    usage.watch("postgresql", tree(stack.postgres_pid))
    usage.watch("client", pids(os.getpid()))
    idle_rss = api.rss_mib()
    usage.start()
    outcomes = await download_all(
        stack.deployment.api_url, image, devices, password, range_bytes=range_bytes
    )
    usage.stop()
    summary = usage.summary()
    failed = [o for o in outcomes if o.error is not None]
    times = sorted(o.seconds for o in outcomes if o.error is None)
    return Downloaded(
        mode=mode,
        range_bytes=range_bytes,
        devices=len(devices),
        size=image.size,
        requests=sum(o.requests for o in outcomes),
        failed=len(failed),
        errors=sorted({o.error for o in failed if o.error is not None})[:5],
        seconds=max((o.seconds for o in outcomes), default=float("nan")),
        p50_s=percentile(times, 0.5),
        p95_s=percentile(times, 0.95),
        p99_s=percentile(times, 0.99),
        max_s=times[-1] if times else float("nan"),
        api_idle_rss_mib=round(idle_rss, 1),
        api_peak_rss_mib=summary["api"]["peak_rss_mib"],
        api_cpu_percent=summary["api"]["cpu_percent"],
        postgres_cpu_percent=summary["postgresql"]["cpu_percent"],
        client_cpu_percent=summary["client"]["cpu_percent"],
    )


def _mode_label(downloaded: Downloaded) -> str:
    size = downloaded.range_bytes
    return "whole image" if size is None else f"{size // 1024} KiB ranges"


def _report(
    result: Result, options: OtaOptions, downloads: list[Downloaded], paces: list[Pace]
) -> None:
    if downloads:
        size_mib = options.image_kib / 1024
        table = Table(
            f"{options.devices} devices downloading a {size_mib:.3g} MiB image at once through"
            " one API process",
            [
                "request",
                "requests",
                "failed",
                "seconds",
                "MB/s",
                "p50 s",
                "p95 s",
                "p99 s",
                "max s",
            ],
        )
        cost = Table(
            "What the downloads cost",
            [
                "request",
                "API RSS before MiB",
                "API peak RSS MiB",
                "API CPU %",
                "PostgreSQL CPU %",
                "clients CPU %",
            ],
        )
        for d in downloads:
            label = _mode_label(d)
            table.rows.append(
                [
                    label,
                    d.requests,
                    d.failed,
                    round(d.seconds, 2),
                    round(d.megabytes_per_second, 1),
                    round(d.p50_s, 2),
                    round(d.p95_s, 2),
                    round(d.p99_s, 2),
                    round(d.max_s, 2),
                ]
            )
            cost.rows.append(
                [
                    label,
                    d.api_idle_rss_mib,
                    d.api_peak_rss_mib,
                    d.api_cpu_percent,
                    d.postgres_cpu_percent,
                    d.client_cpu_percent,
                ]
            )
        result.tables += [table, cost]
        result.notes += [
            "Each device is its own HTTP client with one connection (HTTP Basic: its id and"
            " password) and checks the sha256 of the bytes it got; nothing is retried. Time to"
            " complete runs from the common start to a device's last byte.",
            f"All devices share one password hash (PBKDF2-SHA512, {DEVICE_HASH_ITERATIONS:,}"
            " iterations, fieldline's default), but the API remembers a match per device: the"
            " first request of each device pays a PBKDF2 check (the Range mode's later"
            " requests do not, within a minute).",
            "Each mode has its own devices and its own image, so each reads the image's pieces"
            " from PostgreSQL once and then serves them from the API's memory"
            + ("; both run on the same API process, in this order." if len(downloads) > 1 else "."),
            "The clients (this process), the API and PostgreSQL share the machine's cores;"
            " RSS sampled every 0.2 s.",
        ]
        for d in downloads:
            if d.errors:
                result.notes.append(f"{_mode_label(d)}: failures: {'; '.join(d.errors)}")
    if paces:
        table = Table(
            f"A rollout to {options.pacing_devices:,} devices at 100%: devices told"
            " (rollout_devices.notified_at)",
            [
                "max_per_minute",
                "seconds",
                "told",
                "per minute",
                "% of the pace",
                "most in 1 s",
                "bucket allows in 1 s",
                "most in 60 s",
                "bucket allows in 60 s",
                "received over MQTT",
            ],
        )
        rounds = Table(
            "The worker's rounds while it told them",
            [
                "max_per_minute",
                "rounds that told",
                "largest round",
                "gap p50 ms",
                "gap max ms",
                "first told after s",
                "told to received p50 ms",
                "told to received max ms",
                "worker CPU %",
                "worker peak RSS MiB",
                "PostgreSQL CPU %",
                "Mosquitto CPU %",
                "cancel cleared in s",
            ],
        )
        for p in paces:
            table.rows.append(
                [
                    p.per_minute,
                    round(p.window_s, 1),
                    p.told,
                    round(p.achieved_per_minute),
                    round(100 * p.achieved_per_minute / p.per_minute, 1),
                    p.most_in_1s,
                    round(p.allowed_in_1s),
                    p.most_in_60s,
                    round(p.allowed_in_60s),
                    p.received,
                ]
            )
            rounds.rows.append(
                [
                    p.per_minute,
                    p.rounds,
                    p.largest_round,
                    round(p.round_gap_p50_ms),
                    round(p.round_gap_max_ms),
                    round(p.first_told_s, 2) if p.first_told_s is not None else "",
                    round(p.lag_p50_ms),
                    round(p.lag_max_ms),
                    p.usage["fieldline worker"]["cpu_percent"],
                    p.usage["fieldline worker"]["peak_rss_mib"],
                    p.usage["postgresql"]["cpu_percent"],
                    p.usage["mosquitto"]["cpu_percent"],
                    round(p.clear_s, 1),
                ]
            )
        result.tables += [table, rounds]
        result.notes += [
            "Per minute: devices told over the window from the rollout's creation to its pause."
            " The engine's token bucket holds at most"
            f" {BURST_SECONDS:g} s of the pace, so any window of W seconds may tell"
            f" (W + {BURST_SECONDS:g}) x the rate per second: the `allows` columns.",
            "A round's devices share one notified_at (the round's start, taken before it reads"
            " the rollout: `first told` can precede the rollout's creation, and `told to"
            " received` includes the round's own work); `received over MQTT`"
            " counts the retained QoS 1 announcements a subscriber to devices/+/ota got for"
            " the rollout. Between rates the rollout is paused, then cancelled, and the"
            " next starts once the worker has cleared every retained announcement.",
        ]
    result.data = {
        "downloads": [
            asdict(d) | {"megabytes_per_second": d.megabytes_per_second} for d in downloads
        ],
        "paces": [asdict(p) | {"achieved_per_minute": p.achieved_per_minute} for p in paces],
    }


def _rates(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


@click.command("ota")
@click.option("--devices", default=500, show_default=True, help="Devices downloading at once.")
@click.option("--image-kib", default=2048, show_default=True, help="Size of the image, KiB.")
@click.option(
    "--modes",
    default=",".join(MODES),
    show_default=True,
    help="Downloads to run: whole (one request), range (Range requests); empty: none.",
)
@click.option(
    "--range-kib",
    default=SIMULATOR_RANGE_BYTES // 1024,
    show_default=True,
    help="Bytes per Range request, KiB (the simulator's by default).",
)
@click.option(
    "--pacing-devices", default=10_000, show_default=True, help="Devices the paced rollout targets."
)
@click.option(
    "--rates",
    default="600,6000",
    show_default=True,
    help="max_per_minute values, one rollout each; empty: no pace measured.",
)
@click.option("--duration", default=60.0, show_default=True, help="Seconds each rate runs.")
@click.option("--postgres-bin", type=click.Path(path_type=Path), help="initdb/pg_ctl directory.")
@click.option("--keep-dir", is_flag=True, help="Keep the stack's directory (logs, database).")
def command(
    devices: int,
    image_kib: int,
    modes: str,
    range_kib: int,
    pacing_devices: int,
    rates: str,
    duration: float,
    postgres_bin: Path | None,
    keep_dir: bool,
) -> None:
    """A rollout's devices downloading at once (MB/s, p99, API memory), and the pace held."""
    chosen = tuple(mode.strip() for mode in modes.split(",") if mode.strip())
    unknown = sorted(set(chosen) - set(MODES))
    if unknown:
        raise click.BadParameter(f"unknown: {', '.join(unknown)}", param_hint="--modes")
    options = OtaOptions(
        devices=devices,
        image_kib=image_kib,
        modes=chosen,
        range_kib=range_kib,
        pacing_devices=pacing_devices,
        rates=_rates(rates),
        duration=duration,
    )
    directory = Path(tempfile.mkdtemp(prefix="fieldline-bench-"))
    try:
        result = asyncio.run(run(directory, options, postgres_bin=postgres_bin))
    finally:
        if keep_dir:
            click.echo(f"kept: {directory}", err=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    publish(result)
    failed = sum(d["failed"] for d in result.data["downloads"])
    if failed:
        raise click.ClickException(f"{failed} downloads failed (see the notes)")
