"""The benchmarks' load generator: devices publishing telemetry at a fixed total rate.

Built not to be the bottleneck: the fleet is split over several processes, each
one event loop (uvloop) driving its share of the devices' own MQTT connections
(MQTT 3.1.1, QoS 1), and every message is written as bytes: a pre-encoded payload
template into which only the message id, the send time and a few numbers are
formatted, behind the PUBLISH header. A device with several messages due in one
tick of the pacing loop sends them in one write.

Each message carries 5 metrics and is stamped with its send time in microseconds
(`timestamp` in epoch seconds), which the latency scenario reads back. The
broker's PUBACKs are counted: a message counts as sent when it is acknowledged.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Any, cast

METRICS_PER_MESSAGE = 5
PAYLOAD = (
    b'{"message_id":"%s-%d","timestamp":%.6f,"sensors":{"temperature":%.2f,'
    b'"humidity":%.1f,"pressure":%.1f,"battery":%.3f,"co2":%d}}'
)
TICK_S = 0.005
ACK_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LoadPlan:
    devices: list[tuple[str, str]]  # (device id, MQTT password)
    rate: float  # messages/s in all, spread evenly over the devices
    duration: float  # seconds of publishing
    mqtt_port: int
    mqtt_host: str = "127.0.0.1"
    processes: int = 2
    run: str = "run"  # part of every message id, so that runs never collide


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


def _remaining_length(length: int) -> bytes:
    """MQTT's variable-length integer."""
    encoded = bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


def _string(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def connect_packet(client_id: str, username: str, password: str, keepalive: int = 60) -> bytes:
    """MQTT 3.1.1 CONNECT with a clean session, a username and a password."""
    body = (
        _string(b"MQTT")
        + bytes((4, 0xC2))  # level 4; username, password, clean session
        + keepalive.to_bytes(2, "big")
        + _string(client_id.encode())
        + _string(username.encode())
        + _string(password.encode())
    )
    return b"\x10" + _remaining_length(len(body)) + body


class _Device(asyncio.Protocol):
    """One device's MQTT connection: writes pre-encoded packets, counts PUBACKs.

    gmqtt spent more than half of the generator's time in its publish path (packet
    objects, its store of unacknowledged messages, logging); a QoS 1 PUBLISH is a
    header, the topic, a packet id and the payload, so the generator writes those bytes.
    """

    def __init__(self, topic: bytes) -> None:
        self.topic = _string(topic)
        self.transport: asyncio.Transport | None = None
        self.connected: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.published = 0
        self.acknowledged = 0
        self._unread = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed before CONNACK"))

    def data_received(self, data: bytes) -> None:
        data = self._unread + data if self._unread else data
        at, size = 0, len(data)
        while size - at >= 2:
            kind = data[at] >> 4
            length, shift, cursor = 0, 0, at + 1
            while cursor < size:
                digit = data[cursor]
                length |= (digit & 0x7F) << shift
                cursor += 1
                if not digit & 0x80:
                    break
                shift += 7
            else:
                break  # the length itself is incomplete
            end = cursor + length
            if end > size:
                break
            if kind == 4:  # PUBACK
                self.acknowledged += 1
            elif kind == 2 and not self.connected.done():  # CONNACK: flags, return code
                self.connected.set_result(data[cursor + 1])
            at = end
        self._unread = data[at:]

    def packet(self, payload: bytes) -> bytes:
        """A QoS 1 PUBLISH of `payload` on this device's topic."""
        self.published += 1
        packet_id = self.published % 65_535 + 1
        remaining = len(self.topic) + 2 + len(payload)
        return (
            b"\x32"
            + _remaining_length(remaining)
            + self.topic
            + packet_id.to_bytes(2, "big")
            + payload
        )


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


async def _connect(
    plan: LoadPlan, devices: list[tuple[str, str]], report: LoadReport
) -> list[tuple[_Device, bytes]]:
    """Connect every device (100 at a time); answer each with its message-id prefix."""
    loop = asyncio.get_running_loop()
    clients: list[tuple[_Device, bytes]] = []
    gate = asyncio.Semaphore(100)

    async def connect(device_id: str, password: str) -> None:
        device = _Device(f"devices/{device_id}/telemetry".encode())
        # Its client id is its device id: brokers refuse any other. No keepalive: the
        # generator never pings, and connecting 10,000 devices to Mosquitto (a password
        # hash each) takes longer than 1.5 keepalives of 60 s, after which the broker
        # dropped the first ones before the load began (`fieldline bench alerts`).
        hello = connect_packet(device_id, device_id, password, keepalive=0)
        try:
            async with gate:
                transport, _ = await loop.create_connection(
                    lambda: device, plan.mqtt_host, plan.mqtt_port
                )
                transport.write(hello)
                code = await asyncio.wait_for(device.connected, CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ConnectionError):
            report.connect_failures += 1
            return
        if code != 0:
            transport.close()
            report.connect_failures += 1
            return
        clients.append((device, f"{device_id}-{plan.run}".encode()))

    await asyncio.gather(*(connect(device_id, password) for device_id, password in devices))
    return clients


async def _publish(
    plan: LoadPlan, devices: list[tuple[str, str]], fleet_size: int, ready: Any, start_at: Any
) -> LoadReport:
    report = LoadReport()
    clients = await _connect(plan, devices, report)
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
        elapsed = time.time() - started
        if elapsed >= plan.duration:
            break
        due = int(elapsed * rate) - sent
        # A device with several messages due in this tick sends them in one write.
        writes: dict[int, list[bytes]] = {}
        for _ in range(due):
            device, prefix = clients[index]
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
            writes.setdefault(index, []).append(device.packet(payload))
            index = (index + 1) % len(clients)
        for number, packets in writes.items():
            transport = clients[number][0].transport
            assert transport is not None
            transport.write(packets[0] if len(packets) == 1 else b"".join(packets))
        sent += max(due, 0)
        second = int(elapsed)
        while len(report.per_second) <= second:
            report.per_second.append(0)
        report.per_second[second] += max(due, 0)
        await asyncio.sleep(TICK_S)
    report.published = sent
    report.ended = time.time()
    report.acknowledged = await _finish([device for device, _ in clients])
    return report


async def _finish(devices: list[_Device]) -> int:
    """Wait (a while) for every PUBACK, disconnect; answer how many arrived."""
    deadline = time.monotonic() + ACK_TIMEOUT_S
    while time.monotonic() < deadline and any(d.acknowledged < d.published for d in devices):
        await asyncio.sleep(0.05)
    for device in devices:
        if device.transport is not None:
            device.transport.write(b"\xe0\x00")  # DISCONNECT
            device.transport.close()
    return sum(device.acknowledged for device in devices)
