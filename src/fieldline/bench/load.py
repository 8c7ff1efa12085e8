"""The benchmarks' load generator: devices publishing telemetry at a fixed total rate.

Built not to be the bottleneck: the fleet is split over several processes, each
one event loop (uvloop) driving its share of the devices' own MQTT connections
through gmqtt (the fastest client MEASURED.md found), and every payload is a
pre-encoded byte template into which only the message id, the send time and a
few numbers are formatted.

Each message carries 5 metrics and is stamped with its send time in microseconds
(`timestamp` in epoch seconds), which the latency scenario reads back. The
broker's PUBACKs are counted: a message counts as sent when it is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.storage import PersistentStorage

METRICS_PER_MESSAGE = 5
PAYLOAD = (
    b'{"message_id":"%s-%d","timestamp":%.6f,"sensors":{"temperature":%.2f,'
    b'"humidity":%.1f,"pressure":%.1f,"battery":%.3f,"co2":%d}}'
)
TICK_S = 0.005
ACK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LoadPlan:
    devices: list[tuple[str, str]]  # (device id, MQTT password)
    rate: float  # messages/s in all, spread evenly over the devices
    duration: float  # seconds of publishing
    mqtt_port: int
    mqtt_host: str = "127.0.0.1"
    processes: int = 2
    run: str = "run"  # part of every message id, so that runs never collide
    qos: int = 1


@dataclass
class LoadReport:
    published: int = 0
    acknowledged: int = 0
    connect_failures: int = 0
    started: float = 0.0  # wall clock (time.time()) of the first publish
    ended: float = 0.0  # wall clock of the last publish
    # Messages published in each whole second since `started`.
    per_second: list[int] = field(default_factory=list)
    cpu_seconds: float = 0.0  # of the generator processes together

    @property
    def publish_rate(self) -> float:
        return self.published / max(self.ended - self.started, 1e-9)

    def merge(self, other: LoadReport) -> None:
        if not self.started or (other.started and other.started < self.started):
            offset = int(self.started - other.started) if self.started else 0
            self.per_second = [0] * offset + self.per_second
            self.started = other.started
        offset = int(other.started - self.started)
        for second, count in enumerate(other.per_second):
            while len(self.per_second) <= offset + second:
                self.per_second.append(0)
            self.per_second[offset + second] += count
        self.published += other.published
        self.acknowledged += other.acknowledged
        self.connect_failures += other.connect_failures
        self.ended = max(self.ended, other.ended)
        self.cpu_seconds += other.cpu_seconds


async def generate(plan: LoadPlan) -> LoadReport:
    """Run the plan in `plan.processes` processes; answer their merged report."""
    shards = [plan.devices[n :: plan.processes] for n in range(plan.processes)]
    shards = [shard for shard in shards if shard]
    ctx = multiprocessing.get_context("spawn")
    results: Any = ctx.Queue()
    # All processes start publishing at the same wall-clock moment, once all connected.
    start_at = ctx.Value("d", 0.0)
    ready = ctx.Barrier(len(shards) + 1)
    procs = [
        ctx.Process(
            target=_process_main,
            args=(plan, shard, len(plan.devices), results, ready, start_at),
            name=f"fieldline-bench-load-{number}",
            daemon=True,
        )
        for number, shard in enumerate(shards)
    ]
    for proc in procs:
        proc.start()
    await asyncio.to_thread(ready.wait, 120)
    start_at.value = time.time() + 0.2
    await asyncio.to_thread(ready.wait, 5)
    report = LoadReport()
    for _ in procs:
        report.merge(await asyncio.to_thread(results.get, True, plan.duration + 300))
    for proc in procs:
        await asyncio.to_thread(proc.join, 10)
    return report


class _AckCounter(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacknowledged QoS 1 publishes, counting acknowledgements."""

    def __init__(self) -> None:
        super().__init__()
        self.acknowledged = 0

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        self.acknowledged += 1


def _process_main(
    plan: LoadPlan,
    devices: list[tuple[str, str]],
    fleet_size: int,
    results: Any,
    ready: Any,
    start_at: Any,
) -> None:
    import resource

    import uvloop

    begin = resource.getrusage(resource.RUSAGE_SELF)
    report = uvloop.run(_publish(plan, devices, fleet_size, ready, start_at))
    end = resource.getrusage(resource.RUSAGE_SELF)
    report.cpu_seconds = end.ru_utime + end.ru_stime - begin.ru_utime - begin.ru_stime
    results.put(report)


async def _publish(
    plan: LoadPlan, devices: list[tuple[str, str]], fleet_size: int, ready: Any, start_at: Any
) -> LoadReport:
    report = LoadReport()
    clients: list[tuple[gmqtt.Client, bytes, bytes, _AckCounter]] = []
    gate = asyncio.Semaphore(100)

    async def connect(device_id: str, password: str) -> None:
        counter = _AckCounter()
        client = gmqtt.Client(
            f"{device_id}-bench-{plan.run}", clean_session=True, persistent_storage=counter
        )
        client.set_auth_credentials(device_id, password)
        client.set_config({"reconnect_retries": 3, "reconnect_delay": 1})
        try:
            async with gate:
                await client.connect(plan.mqtt_host, plan.mqtt_port, version=MQTTv311, keepalive=60)
        except Exception:
            report.connect_failures += 1
            return
        topic = f"devices/{device_id}/telemetry".encode()
        clients.append((client, topic, f"{device_id}-{plan.run}".encode(), counter))

    await asyncio.gather(*(connect(device_id, password) for device_id, password in devices))
    await asyncio.to_thread(ready.wait, 120)
    await asyncio.to_thread(ready.wait, 5)
    rate = plan.rate * len(devices) / fleet_size  # this process's share
    started = start_at.value
    await asyncio.sleep(max(0.0, started - time.time()))
    report.started = started
    sequence = [0] * len(clients)
    index = 0
    sent = 0
    while clients:
        now = time.time()
        elapsed = now - started
        if elapsed >= plan.duration:
            break
        due = int(elapsed * rate) - sent
        for _ in range(due):
            client, topic, prefix, _counter = clients[index]
            seq = sequence[index] = sequence[index] + 1
            payload = PAYLOAD % (
                prefix,
                seq,
                time.time(),
                20 + seq % 10 * 0.37,
                40 + seq % 20 * 0.5,
                1013 + seq % 7 * 0.1,
                3.7 - seq % 5 * 0.01,
                400 + seq % 50,
            )
            client.publish(topic, payload, qos=plan.qos)
            index = (index + 1) % len(clients)
        sent += max(due, 0)
        second = int(elapsed)
        while len(report.per_second) <= second:
            report.per_second.append(0)
        report.per_second[second] += max(due, 0)
        await asyncio.sleep(TICK_S)
    report.published = sent
    report.ended = time.time()
    deadline = time.monotonic() + ACK_TIMEOUT_S
    while time.monotonic() < deadline and any(not c.is_empty for _, _, _, c in clients):
        await asyncio.sleep(0.05)
    report.acknowledged = sum(counter.acknowledged for _, _, _, counter in clients)
    for client, _, _, _ in clients:
        with contextlib.suppress(Exception):
            await client.disconnect()
    return report
