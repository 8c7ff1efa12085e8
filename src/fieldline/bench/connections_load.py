"""Many devices, each its own MQTT connection, connected at a paced rate and publishing slowly.

The fleet is split over several processes (device k lives in process k mod N and
connects to listener port k mod P), each one uvloop event loop holding its
devices' gmqtt clients. There is no task per device: one scheduler per process
pops due devices from a heap and publishes their next pre-formatted message, so
a process's cost is its sockets, not its timers.

The parent drives the processes stage by stage (`ramp(target)`), asks for running
totals (`totals()`) and finally stops them (`stop()`), which waits for every
QoS 1 publish to be acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import multiprocessing
import queue
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.storage import PersistentStorage

PAYLOAD = b'{"message_id":"%s-%d","timestamp":%.3f,"sensors":{"temperature":%.1f}}'
PUBLISH_TICK_S = 0.02
ACK_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class LoadConfig:
    devices: list[str]  # the whole fleet, in connect order
    password: str
    ports: list[int]
    publish_interval: float
    connect_rate: float  # connections/s, all processes together
    processes: int
    host: str = "127.0.0.1"
    keepalive: int = 120
    connect_timeout: float = 60.0
    # CONNECTs awaiting CONNACK, per process: past what the broker takes, more only queue.
    in_flight: int = 250
    # A stage's ramp stops after this many failures (per process): a broker out of
    # file descriptors refuses everything after, and each refusal costs a timeout.
    give_up_after: int = 200


@dataclass(slots=True)
class RampStats:
    """One process's part of one stage's ramp."""

    attempted: int = 0
    connected: int = 0
    failures: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    # Wall-clock time of each successful CONNACK, and the seconds each connect took.
    connected_at: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    rss_bytes: int = 0


@dataclass(slots=True)
class Totals:
    connected: int = 0  # live now
    dropped: int = 0  # connected once, then lost
    published: int = 0
    acknowledged: int = 0
    rss_bytes: int = 0

    def add(self, other: Totals) -> None:
        self.connected += other.connected
        self.dropped += other.dropped
        self.published += other.published
        self.acknowledged += other.acknowledged
        self.rss_bytes += other.rss_bytes


class LoadGenerator:
    """The parent's handle on the generator processes (an async context manager)."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        ctx = multiprocessing.get_context("spawn")
        self._replies: Any = ctx.Queue()
        self._commands: list[Any] = [ctx.Queue() for _ in range(config.processes)]
        self._procs = [
            ctx.Process(
                target=_process_main,
                args=(config, number, self._commands[number], self._replies),
                name=f"fieldline-bench-connections-{number}",
                daemon=True,
            )
            for number in range(config.processes)
        ]
        self.baseline = Totals()  # RSS of the processes before any connection
        self.ramp_started = 0.0  # wall clock at which the last ramp began

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs if proc.pid is not None]

    async def __aenter__(self) -> LoadGenerator:
        for proc in self._procs:
            proc.start()
        for totals in await self._ask(("totals",)):
            self.baseline.add(totals)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for commands in self._commands:
            commands.put(("exit",))
        for proc in self._procs:
            await asyncio.to_thread(proc.join, 30)
            if proc.is_alive():
                proc.kill()

    async def ramp(self, target: int) -> list[RampStats]:
        """Connect devices until `target` of the fleet have been tried, at the configured rate."""
        self.ramp_started = time.time() + 0.5
        return await self._ask(("ramp", target, self.ramp_started))

    async def totals(self) -> Totals:
        merged = Totals()
        for totals in await self._ask(("totals",)):
            merged.add(totals)
        return merged

    async def stop(self) -> Totals:
        """Stop publishing, wait for outstanding acknowledgements, disconnect everyone."""
        merged = Totals()
        for totals in await self._ask(("stop",)):
            merged.add(totals)
        return merged

    async def _ask(self, command: tuple[Any, ...]) -> list[Any]:
        for commands in self._commands:
            commands.put(command)
        replies: dict[int, Any] = {}
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while len(replies) < len(self._procs):
            try:
                number, reply = await asyncio.to_thread(self._replies.get, True, 1.0)
            except queue.Empty:
                dead = [p.name for p in self._procs if p.exitcode is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"load generator failed: {dead or 'no reply'}") from None
                continue
            replies[number] = reply
        return [replies[number] for number in sorted(replies)]


def _process_main(config: LoadConfig, number: int, commands: Any, replies: Any) -> None:
    import uvloop  # the parent never needs it

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    uvloop.run(_Shard(config, number).serve(commands, replies))


class _Acks(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacknowledged QoS 1 publishes, counting acknowledgements."""

    def __init__(self, totals: Totals) -> None:
        super().__init__()
        self._totals = totals

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        self._totals.acknowledged += 1


class _Client(gmqtt.Client):  # type: ignore[misc]
    """Stays down once dropped or refused: a reconnect would hide what the broker did."""

    async def reconnect(self, delay: bool = False) -> None:
        return None


@dataclass(slots=True)
class _Device:
    client: _Client
    topic: str
    prefix: bytes
    acks: _Acks
    sequence: int = 0
    alive: bool = True


class _Shard:
    """One process's devices."""

    def __init__(self, config: LoadConfig, number: int) -> None:
        self.config = config
        self.number = number
        mine = range(number, len(config.devices), config.processes)
        self.fleet_index = list(mine)  # fleet positions of this process's devices
        self.next = 0  # this process's next device to connect
        self.totals = Totals()
        self.live: list[_Device] = []
        self.due: list[tuple[float, int]] = []  # (publish time, index into live)
        self.publishing = True

    async def serve(self, commands: Any, replies: Any) -> None:
        publisher = asyncio.create_task(self._publish_loop(), name="publish")
        number = self.number
        while True:
            command = await asyncio.to_thread(commands.get)
            if command[0] == "ramp":
                replies.put((number, await self._ramp(command[1], command[2])))
            elif command[0] == "totals":
                replies.put((number, self._totals()))
            elif command[0] == "stop":
                self.publishing = False
                await self._drain()
                replies.put((number, self._totals()))
                await self._disconnect_all()
            else:
                publisher.cancel()
                return

    def _totals(self) -> Totals:
        self.totals.connected = sum(device.alive for device in self.live)
        self.totals.rss_bytes = _rss_bytes()
        return dataclasses.replace(self.totals)

    async def _ramp(self, target: int, start_at: float) -> RampStats:
        config = self.config
        stats = RampStats()
        rate = config.connect_rate / config.processes
        gate = asyncio.Semaphore(config.in_flight)
        tasks: list[asyncio.Task[None]] = []
        scheduled = 0
        while self.next < len(self.fleet_index) and self.fleet_index[self.next] < target:
            if stats.failures >= config.give_up_after:
                break
            delay = start_at + scheduled / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            position = self.fleet_index[self.next]
            self.next += 1
            scheduled += 1
            tasks.append(asyncio.create_task(self._connect(position, gate, stats)))
        stats.attempted += scheduled
        await asyncio.gather(*tasks)
        stats.rss_bytes = _rss_bytes()
        return stats

    async def _connect(self, position: int, gate: asyncio.Semaphore, stats: RampStats) -> None:
        config = self.config
        device_id = config.devices[position]
        acks = _Acks(self.totals)
        client = _Client(device_id, clean_session=True, persistent_storage=acks)
        client.set_auth_credentials(device_id, config.password)
        client.set_config({"reconnect_retries": 0})
        async with gate:
            if stats.failures >= config.give_up_after:
                stats.attempted -= 1  # the ramp gave up before this one's turn
                return
            began = time.time()
            try:
                await asyncio.wait_for(
                    client.connect(
                        config.host,
                        config.ports[position % len(config.ports)],
                        version=MQTTv311,
                        keepalive=config.keepalive,
                    ),
                    config.connect_timeout,
                )
            except Exception as exc:  # counted and reported by kind
                stats.failures += 1
                stats.errors[_describe(exc)] += 1
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), 1)
                return
        done = time.time()
        stats.connected += 1
        stats.connected_at.append(done)
        stats.latencies.append(done - began)
        device = _Device(client, f"devices/{device_id}/telemetry", device_id.encode(), acks)
        index = len(self.live)
        self.live.append(device)

        def lost(*_: object) -> None:
            if device.alive and self.publishing:
                self.totals.dropped += 1
            device.alive = False

        client.on_disconnect = lost
        self._publish(device)  # a device reports as soon as it is connected
        heapq.heappush(self.due, (done + config.publish_interval, index))

    def _publish(self, device: _Device) -> None:
        device.sequence += 1
        reading = 20 + device.sequence % 50 * 0.1
        payload = PAYLOAD % (device.prefix, device.sequence, time.time(), reading)
        device.client.publish(device.topic, payload, qos=1)
        self.totals.published += 1

    async def _publish_loop(self) -> None:
        interval = self.config.publish_interval
        while True:
            await asyncio.sleep(PUBLISH_TICK_S)
            if not self.publishing:
                continue
            now = time.time()
            while self.due and self.due[0][0] <= now:
                due, index = heapq.heappop(self.due)
                device = self.live[index]
                if device.alive:
                    self._publish(device)
                    heapq.heappush(self.due, (due + interval, index))

    async def _drain(self) -> None:
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while time.monotonic() < deadline and any(
            device.alive and not device.acks.is_empty for device in self.live
        ):
            await asyncio.sleep(0.1)

    async def _disconnect_all(self) -> None:
        async def one(device: _Device) -> None:
            device.alive = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(device.client.disconnect(), 5)

        await asyncio.gather(*(one(device) for device in self.live))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no CONNACK in time"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"[:120]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()
