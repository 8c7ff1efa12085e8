"""Scenario 9: MQTT fuzz through a live `fieldline up`, and whether every count adds up.

A fleet publishes a seeded mix of good, duplicate and hostile messages
(fuzz_messages: every way a payload can be wrong) at QoS 1 to one `fieldline up`
with its managed Mosquitto, on a PostgreSQL this scenario starts (so that it can
count in the database too). Afterwards, per message and per reading, what was
expected is set beside what /metrics counted and what the database holds:
received = stored + duplicate + rejected, each rejection with the reason
expected, every good reading stored once, and ingest still ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import httpx
import psycopg

from fieldline.bench.deployment import metric_total
from fieldline.bench.fuzz_messages import Expected, FuzzDevice
from fieldline.bench.load import _Device, _remaining_length, _string, connect_packet
from fieldline.bench.local_up import ADMIN_PASSWORD, register_devices, start_up, stop_up
from fieldline.bench.report import Result, Table, parse_settings, publish
from fieldline.storage.pgserver import LocalPostgres

SETTLE_TIMEOUT_S = 300.0  # for ingest to store what was acknowledged
ACK_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
TICK_S = 0.01


@dataclass
class FuzzOptions:
    devices: int = 20
    messages: int = 60_000
    rate: float = 2_000.0  # messages/s in all
    seed: int = 12
    postgres_bin: Path | None = None
    directory: Path | None = None  # kept afterwards when given
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Published:
    expected: Expected
    published: int
    acknowledged: int
    seconds: float


@dataclass
class Observed:
    """The run's counts, from /metrics and from the database."""

    received: int
    stored: int
    duplicate: int
    rejected: dict[str, int]
    readings: int
    duplicate_readings: int
    points: int
    queue_depth: int
    write_errors: int
    stored_ids: int  # of the expected good readings' ids, how many the ledger holds
    points_in_database: int
    rejected_in_database: dict[str, int]
    ready: int  # /ready's status afterwards

    @property
    def adds_up(self) -> bool:
        return self.received == self.stored + self.duplicate + sum(self.rejected.values())


class _Connection(_Device):
    """The load generator's device connection (PUBACKs counted), publishing on any of
    the device's topics."""

    def __init__(self) -> None:
        super().__init__(b"")
        self.lost = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        super().connection_lost(exc)

    def publish(self, topic: str, payload: bytes) -> None:
        assert self.transport is not None
        self.published += 1
        packet_id = self.published % 65_535 + 1
        body = _string(topic.encode()) + packet_id.to_bytes(2, "big") + payload
        self.transport.write(b"\x32" + _remaining_length(len(body)) + body)


async def _connect(port: int, client_id: str, username: str, password: str) -> _Connection:
    connection = _Connection()
    await asyncio.get_running_loop().create_connection(lambda: connection, "127.0.0.1", port)
    assert connection.transport is not None
    connection.transport.write(connect_packet(client_id, username, password))
    code = await asyncio.wait_for(connection.connected, 30)
    if code != 0:
        raise click.ClickException(f"{username} was refused by the broker (code {code})")
    return connection


async def publish_fuzz(
    devices: list[tuple[str, str]],
    *,
    mqtt_port: int,
    messages: int,
    rate: float,
    seed: int,
    run: str = "fuzz",
) -> Published:
    """Publish `messages` fuzz messages round-robin from `devices` (id, password) at `rate`
    messages/s, each device on its own connection; wait for the broker's PUBACKs."""
    rng = random.Random(seed)  # noqa: S311 -- a repeatable mix of messages, not secrets
    streams: list[tuple[FuzzDevice, _Connection]] = []
    for device_id, password in devices:
        # Its client id is its device id: brokers refuse any other.
        connection = await _connect(mqtt_port, device_id, device_id, password)
        device_rng = random.Random(rng.getrandbits(64))  # noqa: S311 -- as above
        streams.append((FuzzDevice(device_id, run, device_rng), connection))
    expected = Expected()
    started = time.monotonic()
    sent = 0
    while sent < messages:
        due = min(messages, int((time.monotonic() - started) * rate) + 1) - sent
        for _ in range(due):
            fuzz, connection = streams[sent % len(streams)]
            message = fuzz.next(time.time())
            connection.publish(message.topic, message.payload)
            expected.add(fuzz.device_id, message)
            sent += 1
        await asyncio.sleep(TICK_S)
    seconds = time.monotonic() - started
    deadline = time.monotonic() + ACK_TIMEOUT_S
    connections = [connection for _, connection in streams]
    while time.monotonic() < deadline and any(
        c.acknowledged < c.published and not c.lost for c in connections
    ):
        await asyncio.sleep(0.05)
    for connection in connections:
        if connection.transport is not None:
            connection.transport.write(b"\xe0\x00")  # DISCONNECT
            connection.transport.close()
    return Published(expected, sent, sum(c.acknowledged for c in connections), seconds)


async def observe(api_url: str, database_url: str, expected: Expected) -> Observed:
    """Wait until ingest has written all it received, then count everywhere."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:
        while True:
            text = ""
            with contextlib.suppress(httpx.HTTPError):
                text = (await http.get("/metrics")).text
            counts = _counts(text)
            settled = counts["received"] >= expected.messages and counts["queue"] == 0
            if (settled and _adds_up(counts)) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        ready = (await http.get("/ready")).status_code
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        ledger = {
            (str(row[0]), str(row[1]))
            for row in await (
                await conn.execute("SELECT device_id, message_id FROM message_ledger")
            ).fetchall()
        }
        points = await (await conn.execute("SELECT count(*) FROM telemetry")).fetchone()
        kept = await (
            await conn.execute("SELECT reason, count(*) FROM rejected_messages GROUP BY reason")
        ).fetchall()
    return Observed(
        received=int(counts["received"]),
        stored=int(counts["stored"]),
        duplicate=int(counts["duplicate"]),
        rejected={reason: int(counts[f"rejected:{reason}"]) for reason in _reasons(text)},
        readings=int(counts["readings"]),
        duplicate_readings=int(counts["duplicate_readings"]),
        points=int(counts["points"]),
        queue_depth=int(counts["queue"]),
        write_errors=int(counts["write_errors"]),
        stored_ids=len(expected.ids & ledger),
        points_in_database=int(points[0]) if points else 0,
        rejected_in_database={str(reason): int(count) for reason, count in kept},
        ready=ready,
    )


_COUNTED = {
    "received": "fieldline_messages_received_total",
    "stored": "fieldline_messages_stored_total",
    "duplicate": "fieldline_messages_duplicate_total",
    "rejected": "fieldline_messages_rejected_total",
    "readings": "fieldline_readings_stored_total",
    "duplicate_readings": "fieldline_readings_duplicate_total",
    "points": "fieldline_points_stored_total",
    "queue": "fieldline_ingest_queue_depth",
    "write_errors": "fieldline_ingest_write_errors_total",
}


def _reasons(text: str) -> list[str]:
    prefix = 'fieldline_messages_rejected_total{reason="'
    return sorted(
        line[len(prefix) :].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith(prefix)
    )


def _counts(text: str) -> dict[str, float]:
    counts = {name: metric_total(text, metric) for name, metric in _COUNTED.items()}
    for reason in _reasons(text):
        line = f'fieldline_messages_rejected_total{{reason="{reason}"}}'
        counts[f"rejected:{reason}"] = next(
            float(row.rsplit(" ", 1)[1]) for row in text.splitlines() if row.startswith(line)
        )
    return counts


def _adds_up(counts: dict[str, float]) -> bool:
    return counts["received"] == counts["stored"] + counts["duplicate"] + counts["rejected"]


async def run(options: FuzzOptions) -> Result:
    directory = options.directory or Path(tempfile.mkdtemp(prefix="fieldline-bench-fuzz-"))
    directory.mkdir(parents=True, exist_ok=True)
    result = Result(
        scenario="fuzz",
        params={
            "devices": options.devices,
            "messages": options.messages,
            "offered_msg_per_s": options.rate,
            "seed": options.seed,
            "broker": "mosquitto (managed by fieldline up)",
        },
    )
    postgres = LocalPostgres(directory / "postgres")
    if options.postgres_bin is not None:
        postgres.bin_dir = options.postgres_bin
    url = await asyncio.to_thread(postgres.start)
    try:
        up = await asyncio.to_thread(
            start_up, directory, broker="mosquitto", env={"DATABASE_URL": url, **options.env}
        )
        try:
            devices = await register_devices(up.api, ADMIN_PASSWORD, "fuzz", options.devices)
            sent = await publish_fuzz(
                devices,
                mqtt_port=up.mqtt_port,
                messages=options.messages,
                rate=options.rate,
                seed=options.seed,
            )
            observed = await observe(up.api, url, sent.expected)
        finally:
            if not await stop_up(up, STOP_TIMEOUT_S):
                result.notes.append(
                    f"fieldline up did not stop within {STOP_TIMEOUT_S:g} s of SIGTERM"
                )
    finally:
        await asyncio.to_thread(postgres.stop)
        if options.directory is None:
            shutil.rmtree(directory, ignore_errors=True)
    _tabulate(result, sent, observed)
    return result


def _tabulate(result: Result, sent: Published, seen: Observed) -> None:
    expected = sent.expected
    rejected = sum(expected.rejected.values())
    counts = Table(
        "Messages and readings: expected, counted in /metrics, found in the database",
        ["", "expected", "/metrics", "database"],
        [
            ["messages published", sent.published, "-", "-"],
            ["acknowledged by the broker", sent.acknowledged, "-", "-"],
            ["messages received", expected.messages, seen.received, "-"],
            ["stored", expected.stored, seen.stored, "-"],
            ["duplicate", expected.duplicate, seen.duplicate, "-"],
            ["rejected", rejected, sum(seen.rejected.values()),
             sum(seen.rejected_in_database.values())],
            ["readings stored", expected.readings, seen.readings, "-"],
            ["good readings with an id, in the ledger", len(expected.ids), "-", seen.stored_ids],
            ["duplicate readings", expected.duplicate_readings, seen.duplicate_readings, "-"],
            ["points stored", expected.points, seen.points, seen.points_in_database],
        ],
    )  # fmt: skip
    reasons = sorted(set(expected.rejected) | set(seen.rejected) | set(seen.rejected_in_database))
    by_reason = Table(
        "Rejections by reason",
        ["reason", "expected", "/metrics", "rejected store"],
        [
            [
                reason,
                expected.rejected.get(reason, 0),
                seen.rejected.get(reason, 0),
                seen.rejected_in_database.get(reason, 0),
            ]
            for reason in reasons
        ],
    )
    health = Table(
        "Afterwards",
        ["received = stored + duplicate + rejected", "queue depth", "write errors", "/ready"],
        [["yes" if seen.adds_up else "NO", seen.queue_depth, seen.write_errors, seen.ready]],
    )
    result.tables += [counts, by_reason, health]
    result.notes.append(
        f"published over {sent.seconds:.1f} s; hostile messages: not JSON, not UTF-8, 10,000-level "
        "nesting, numbers past float and 64-bit range, NaN/Infinity, duplicate keys, odd "
        "timestamps, NUL and unpaired surrogates, control/bidi/zero-width names, 70 kB payloads"
    )
    result.data.update(
        expected={
            "messages": expected.messages,
            "stored": expected.stored,
            "duplicate": expected.duplicate,
            "rejected": expected.rejected,
            "readings": expected.readings,
            "points": expected.points,
        },
        observed={key: value for key, value in vars(seen).items() if not isinstance(value, set)},
        published=sent.published,
        acknowledged=sent.acknowledged,
    )
    if not fuzz_passed(sent, seen):
        result.notes.append("THE COUNTS DO NOT ADD UP: see the tables above")


def fuzz_passed(sent: Published, seen: Observed) -> bool:
    """Whether the run came out exactly as expected, everywhere."""
    expected = sent.expected
    return (
        sent.acknowledged == sent.published == expected.messages == seen.received
        and seen.adds_up
        and (seen.stored, seen.duplicate) == (expected.stored, expected.duplicate)
        and seen.rejected == expected.rejected == seen.rejected_in_database
        and seen.readings == expected.readings
        and seen.duplicate_readings == expected.duplicate_readings
        and seen.points == seen.points_in_database == expected.points
        and seen.stored_ids == len(expected.ids)
        and seen.queue_depth == 0
        and seen.ready == 200
    )


@click.command("fuzz")
@click.option("--devices", default=20, show_default=True, help="Devices, each its own connection.")
@click.option("--messages", default=60_000, show_default=True, help="Messages in all.")
@click.option("--rate", default=2_000.0, show_default=True, help="Messages/s offered, in all.")
@click.option("--seed", default=12, show_default=True, help="Seed of the message mix.")
@click.option("--keep", type=click.Path(path_type=Path), help="Run in (and keep) this directory.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="A FIELDLINE_* setting for `fieldline up`.",
)
@click.option(
    "--postgres-bin",
    type=click.Path(path_type=Path, file_okay=False),
    help="initdb/pg_ctl directory (default: the embedded server).",
)
def command(
    devices: int,
    messages: int,
    rate: float,
    seed: int,
    keep: Path | None,
    settings: tuple[str, ...],
    postgres_bin: Path | None,
) -> None:
    """MQTT fuzz through `fieldline up`: good, duplicate and hostile messages; counts add up."""
    options = FuzzOptions(
        devices=devices,
        messages=messages,
        rate=rate,
        seed=seed,
        postgres_bin=postgres_bin,
        directory=keep,
        env=parse_settings(settings),
    )
    result = asyncio.run(run(options))
    publish(result)
    if any(note.startswith("THE COUNTS") for note in result.notes):
        raise SystemExit(1)
