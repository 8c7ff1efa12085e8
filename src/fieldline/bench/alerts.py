"""Scenario: what alert rules cost ingest, and how fast a reading becomes a webhook.

One run, one stack (PostgreSQL, Mosquitto, `fieldline api`, `ingest`, `worker` as
separate processes), one fleet of 10,000 devices in 1,000 groups of 10:

1. the load (20,000 msg/s by default, 5 metrics each) with no rules: the baseline;
2. the same load after 1,000 threshold rules are created through the API, one per
   group, all on `temperature` (so every reading of it goes through the evaluator):
   990 rules that go pending and back as the load's values cycle (state written,
   nothing fires) and 10 that fire and resolve every few seconds (a steady trickle
   of alerts and webhooks), all notifying one webhook channel.

During phase 2, 20 probe devices publish one reading every 2 s each, alternately
above a probe rule's threshold (an alert opens) and below it (it resolves), each
with a value no other reading has. The webhook receiver (fieldline.bench.receiver)
records when each notification arrived; the reading's commit time is read back
from PostgreSQL (`pg_xact_commit_timestamp` of its telemetry row). Latency is
arrival minus commit: evaluation, the outbox and the HTTP delivery together.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import gmqtt
import httpx
import orjson
import psycopg
from gmqtt.mqtt.constants import MQTTv311

from fieldline.bench.connections_seed import device_ids, seed_devices
from fieldline.bench.ingest import Phase, last_commit, measure, retire_ingest, scalar
from fieldline.bench.load import METRICS_PER_MESSAGE, LoadPlan
from fieldline.bench.receiver import WebhookReceiver
from fieldline.bench.report import (
    Result,
    Table,
    common_options,
    parse_settings,
    percentile,
    publish,
)
from fieldline.bench.stack import Stack, running_stack

SCENARIO = "alerts"
GROUP_SIZE = 10
FIRING_RULES = 10  # of the rules, these fire and resolve all the time
PROBES = 20
PROBE_INTERVAL_S = 2.0  # per probe device
PROBE_THRESHOLD = 1000.0
DELIVERY_WAIT_S = 60.0  # after the load, for the last probe webhooks
# The load's messages stored (the probes' are counted apart).
FLEET_STORED = "SELECT count(*) FROM message_ledger WHERE device_id LIKE 'fleet-%'"


@dataclass
class AlertsOptions:
    devices: int = 10_000
    rules: int = 1_000
    rate: float = 20_000.0
    duration: float = 30.0
    processes: int = 2
    postgres_bin: Path | None = None
    directory: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Probes:
    devices: list[str]
    password: str
    receiver: WebhookReceiver
    sent: int = 0


@dataclass
class AlertPhase:
    phase: Phase
    inbox_peak: int = 0
    alerts_opened: int = 0
    notifications_delivered: int = 0


async def run(options: AlertsOptions) -> Result:
    directory = options.directory or Path(tempfile.mkdtemp(prefix="fieldline-bench-alerts-"))
    fleet = device_ids(options.devices, prefix="fleet")
    probe_ids = [f"probe-{n:03d}" for n in range(PROBES)]
    password = ""

    async def seed(stack: Stack) -> None:
        nonlocal password
        password = await seed_devices(
            database_url=stack.database_url,
            dynsec_file=stack.broker.directory / "dynamic-security.json",
            devices=[*fleet, *probe_ids],
        )

    result = Result(
        SCENARIO,
        params={
            "devices": options.devices,
            "rules": options.rules,
            "offered_msg_per_s": options.rate,
            "duration_s": options.duration,
            "metrics_per_message": METRICS_PER_MESSAGE,
            "load_processes": options.processes,
            "probes": PROBES,
            "probe_interval_s": PROBE_INTERVAL_S,
        },
    )
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        async with running_stack(
            directory,
            postgres_bin=options.postgres_bin,
            extra_env=options.env,
            before_broker=seed,
        ) as stack:
            groups = await _arrange(stack.database_url, fleet, probe_ids)
            channel = await _create_channel(stack, receiver.url)
            devices = [(device_id, password) for device_id in fleet]
            baseline = await _phase("no rules", stack, devices, options, "q", None)
            await _create_rules(stack, groups[: options.rules], channel)
            probes = Probes(probe_ids, password, receiver)
            ruled = await _phase(f"{options.rules:,} rules", stack, devices, options, "r", probes)
            latencies, missing = await _latencies(stack.database_url, receiver, probe_ids)
    finally:
        await receiver.stop()
        if options.directory is None:
            shutil.rmtree(directory, ignore_errors=True)
    _tabulate(result, [baseline, ruled], latencies, missing, probes, receiver)
    return result


async def _arrange(database_url: str, fleet: list[str], probes: list[str]) -> list[str]:
    """Groups of GROUP_SIZE fleet devices; the probes get a device type of their own."""
    names = [f"g-{n:05d}" for n in range((len(fleet) + GROUP_SIZE - 1) // GROUP_SIZE)]
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute("INSERT INTO groups (name) SELECT unnest(%s::text[])", (names,))
        await conn.execute(
            "UPDATE devices AS d SET group_id = g.id FROM groups AS g,"
            " unnest(%s::text[], %s::text[]) AS m(device_id, name)"
            " WHERE d.device_id = m.device_id AND g.name = m.name",
            (fleet, [names[n // GROUP_SIZE] for n in range(len(fleet))]),
        )
        await conn.execute(
            "UPDATE devices SET device_type = 'probe' WHERE device_id = ANY(%s)", (probes,)
        )
    return names


async def _create_channel(stack: Stack, url: str) -> int:
    headers = await stack.deployment.admin_headers()
    async with httpx.AsyncClient(base_url=stack.deployment.api_url, headers=headers) as http:
        answer = await http.post(
            "/api/v1/notification-channels",
            json={"name": "bench", "type": "webhook", "config": {"url": url, "secret": "b" * 32}},
        )
    answer.raise_for_status()
    return int(answer.json()["id"])


async def _create_rules(stack: Stack, groups: list[str], channel: int) -> None:
    """One rule per group through the API, and the probes' rule."""
    headers = await stack.deployment.admin_headers()
    pending = {"op": ">", "value": 23, "for_seconds": 5, "clear_value": 21}
    firing = {"op": ">", "value": 23.2, "for_seconds": 0}
    async with httpx.AsyncClient(
        base_url=stack.deployment.api_url, headers=headers, timeout=30
    ) as http:
        rules: list[dict[str, Any]] = [
            {
                "name": f"{group} warm",
                "severity": "info" if n < FIRING_RULES else "warning",
                "scope": {"group": group},
                "condition": {"type": "threshold", "metric": "temperature"}
                | (firing if n < FIRING_RULES else pending),
                "channels": [channel],
            }
            for n, group in enumerate(groups)
        ]
        rules.append(
            {
                "name": "probe",
                "severity": "critical",
                "scope": {"device_type": "probe"},
                "condition": {
                    "type": "threshold",
                    "metric": "temperature",
                    "op": ">",
                    "value": PROBE_THRESHOLD,
                },
                "channels": [channel],
            }
        )
        for rule in rules:
            answer = await http.post("/api/v1/alert-rules", json=rule)
            if answer.status_code != 201:
                raise click.ClickException(f"creating a rule failed: {answer.text}")


async def _phase(
    name: str,
    stack: Stack,
    devices: list[tuple[str, str]],
    options: AlertsOptions,
    run: str,
    probes: Probes | None,
) -> AlertPhase:
    async with await psycopg.AsyncConnection.connect(stack.database_url, autocommit=True) as conn:
        stored_before = await scalar(conn, FLEET_STORED)
        alerts_before = await scalar(conn, "SELECT count(*) FROM alerts")
        delivered_before = await scalar(
            conn, "SELECT count(*) FROM notifications WHERE status = 'delivered'"
        )
        # An ingest instance of its own per phase, as the ingest scenario has per consumer.
        instance = run
        await stack.start_ingest(instance)
        await stack.start_worker()
        last = 0.0

        async def consumed() -> int:
            nonlocal last
            with contextlib.suppress(httpx.HTTPError):
                last = await stack.deployment.metric(
                    f"ingest-{instance}", "fieldline_readings_stored_total"
                )
            return int(last)

        peak = 0
        stop = asyncio.Event()

        async def watch_inbox() -> None:
            nonlocal peak
            async with await psycopg.AsyncConnection.connect(
                stack.database_url, autocommit=True
            ) as watcher:
                while not stop.is_set():
                    peak = max(peak, await scalar(watcher, "SELECT count(*) FROM alert_inbox"))
                    await asyncio.sleep(0.5)

        plan = LoadPlan(
            devices=devices,
            rate=options.rate,
            duration=options.duration,
            mqtt_port=stack.mqtt_port,
            processes=options.processes,
            run=run,
        )
        watching = asyncio.create_task(watch_inbox())
        probing = (
            asyncio.create_task(_probe(probes, stack.mqtt_port, options.duration))
            if probes
            else None
        )
        try:
            phase = await measure(name, stack, plan, consumed)
            if probing is not None and probes is not None:
                await probing
                await _await_deliveries(probes)
        finally:
            stop.set()
            await watching
        stored = await scalar(conn, FLEET_STORED) - stored_before
        points = await scalar(conn, "SELECT count(*) FROM telemetry")
        alerts = await scalar(conn, "SELECT count(*) FROM alerts") - alerts_before
        delivered = (
            await scalar(conn, "SELECT count(*) FROM notifications WHERE status = 'delivered'")
            - delivered_before
        )
    committed = await last_commit(stack.database_url, "message_ledger")
    if committed is not None:
        phase.rate = stored / max(committed - phase.load.started, 1e-9)
    phase.consumed = stored
    phase.points = points
    phase.lost = phase.load.acknowledged - stored
    await retire_ingest(stack, instance)
    stack.usage.unwatch(f"fieldline ingest {instance}")
    await stack.stop_component("worker")
    stack.usage.unwatch("fieldline worker")
    return AlertPhase(phase, peak, alerts, delivered)


async def _probe(probes: Probes, port: int, duration: float) -> None:
    """Each probe device alternates a reading above the probe rule and one below it."""
    clients = []
    for device_id in probes.devices:
        client = gmqtt.Client(device_id, clean_session=True)
        client.set_auth_credentials(device_id, probes.password)
        await client.connect("127.0.0.1", port, version=MQTTv311)
        clients.append((device_id, client))
    high = dict.fromkeys(probes.devices, True)
    began = time.monotonic()
    try:
        while time.monotonic() - began < duration - PROBE_INTERVAL_S:
            for device_id, client in clients:
                probes.sent += 1
                number = probes.sent
                value = PROBE_THRESHOLD * 2 + number if high[device_id] else -float(number)
                high[device_id] = not high[device_id]
                reading = {
                    "message_id": str(uuid.uuid4()),
                    "timestamp": time.time(),
                    "sensors": {"temperature": value},
                }
                client.publish(f"devices/{device_id}/telemetry", orjson.dumps(reading), qos=1)
                await asyncio.sleep(PROBE_INTERVAL_S / len(clients))
    finally:
        for _, client in clients:
            await client.disconnect()


async def _await_deliveries(probes: Probes) -> None:
    deadline = time.monotonic() + DELIVERY_WAIT_S
    while time.monotonic() < deadline:
        if len(_probe_deliveries(probes.receiver)) >= probes.sent:
            return
        await asyncio.sleep(0.5)


def _probe_deliveries(receiver: WebhookReceiver) -> list[Any]:
    return [d for d in receiver.deliveries if str(d.body.get("device_id", "")).startswith("probe-")]


async def _latencies(
    database_url: str, receiver: WebhookReceiver, probes: list[str]
) -> tuple[list[float], int]:
    """Arrival minus commit, in ms, per probe reading; and how many never arrived."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT device_id, value, extract(epoch FROM pg_xact_commit_timestamp(xmin))"
            " FROM telemetry WHERE device_id = ANY(%s) AND metric = 'temperature'",
            (probes,),
        )
        committed = {(row[0], float(row[1])): float(row[2]) for row in await cursor.fetchall()}
    arrived: dict[tuple[str, float], float] = {}
    for delivery in _probe_deliveries(receiver):
        key = (str(delivery.body["device_id"]), float(delivery.body["value"]))
        arrived.setdefault(key, delivery.arrived)
    latencies = sorted(
        1000 * (arrived[key] - at) for key, at in committed.items() if key in arrived
    )
    return latencies, len(set(committed) - set(arrived))


def _tabulate(
    result: Result,
    phases: list[AlertPhase],
    latencies: list[float],
    missing: int,
    probes: Probes,
    receiver: WebhookReceiver,
) -> None:
    baseline = phases[0].phase.rate
    ingest = Table(
        "Ingest of the same load without and with alert rules",
        [
            "phase",
            "published",
            "acknowledged",
            "stored",
            "lost",
            "stored msg/s",
            "of no rules",
            "ingest CPU %",
            "worker CPU %",
            "PostgreSQL CPU %",
            "inbox peak",
            "alerts opened",
            "webhooks delivered",
        ],
    )
    for item in phases:
        phase = item.phase
        usage = phase.usage
        ingest.rows.append(
            [
                phase.name,
                phase.load.published,
                phase.load.acknowledged,
                phase.consumed,
                phase.lost if phase.lost is not None else "-",
                phase.rate,
                f"{phase.rate / baseline:.1%}" if baseline else "-",
                next(
                    (
                        v["cpu_percent"]
                        for k, v in usage.items()
                        if k.startswith("fieldline ingest")
                    ),
                    "-",
                ),
                usage.get("fieldline worker", {}).get("cpu_percent", "-"),
                usage.get("postgresql", {}).get("cpu_percent", "-"),
                item.inbox_peak,
                item.alerts_opened,
                item.notifications_delivered,
            ]
        )
    keys = [d.headers.get("x-fieldline-idempotency-key") for d in receiver.deliveries]
    latency = Table(
        "Reading committed → its webhook received (probe readings during the ruled phase)",
        [
            "probe readings",
            "webhooks",
            "never arrived",
            "repeated keys",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
        ],
        [
            [
                probes.sent,
                len(latencies),
                missing,
                len(keys) - len(set(keys)),
                percentile(latencies, 0.50),
                percentile(latencies, 0.90),
                percentile(latencies, 0.99),
                latencies[-1] if latencies else float("nan"),
            ]
        ],
    )
    result.tables += [ingest, latency]
    result.data["phases"] = [
        {
            "name": item.phase.name,
            "published": item.phase.load.published,
            "acknowledged": item.phase.load.acknowledged,
            "stored": item.phase.consumed,
            "rate": item.phase.rate,
            "lost": item.phase.lost,
            "usage": item.phase.usage,
            "inbox_peak": item.inbox_peak,
            "alerts_opened": item.alerts_opened,
            "webhooks_delivered": item.notifications_delivered,
        }
        for item in phases
    ]
    result.data["latency_ms"] = latencies
    result.data["never_arrived"] = missing
    result.notes.append(
        "Latency is the webhook's arrival at the receiver minus the commit of the reading's "
        "telemetry row (pg_xact_commit_timestamp), both on this machine's clock."
    )


@click.command(SCENARIO)
@click.option("--devices", default=10_000, show_default=True, help="Devices, in groups of 10.")
@click.option("--rules", default=1_000, show_default=True, help="Threshold rules, one per group.")
@click.option("--rate", default=20_000.0, show_default=True, help="Messages/s offered, in all.")
@click.option(
    "--duration", default=30.0, show_default=True, help="Seconds of publishing per phase."
)
@common_options()
def command(
    devices: int,
    rules: int,
    rate: float,
    duration: float,
    processes: int,
    postgres_bin: Path | None,
    keep: Path | None,
    settings: tuple[str, ...],
) -> None:
    """Ingest without and with 1,000 rules over 10,000 devices; reading-to-webhook latency."""
    if rules > (devices + GROUP_SIZE - 1) // GROUP_SIZE:
        raise click.UsageError(f"at most one rule per group of {GROUP_SIZE} devices")
    options = AlertsOptions(
        devices=devices,
        rules=rules,
        rate=rate,
        duration=duration,
        processes=processes,
        postgres_bin=postgres_bin,
        directory=keep,
        env=parse_settings(settings),
    )
    publish(asyncio.run(run(options)))
