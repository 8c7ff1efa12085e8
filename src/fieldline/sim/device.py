"""One simulated device: its own MQTT connection, status, heartbeat and telemetry.

The device connects with its device id as client id (brokers refuse any other) and,
like firmware, reconnects by itself with backoff whenever its connection drops; every
attempt the broker refuses (bad credentials, not authorized: a disabled or rotated
device) or never answers is counted for the report. gmqtt would reconnect on its own,
but it gives up silently after a refusal, so a refused device looked connected.

gmqtt is used through a handful of private attributes, all in this module:
it has no public way to drop a connection without DISCONNECT (needed to make
the broker fire the last will) or to stop a client from reconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import gmqtt
import orjson
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage

from fieldline.domain.topics import Downlink, TopicScheme, Uplink
from fieldline.ops.backoff import Backoff, sleep_unless
from fieldline.sim import payloads
from fieldline.sim.options import FleetOptions, MqttVersion
from fieldline.sim.ota import OtaService, UpdateAgent, UpdaterIdentity
from fieldline.sim.payloads import BAD_KINDS, TimestampForm
from fieldline.sim.report import DeviceStats
from fieldline.sim.values import Reading, SensorModel

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 5.0
RECONNECT_DELAY_S = 2
BACKOFF_CAP_S = 30.0
# After a stall, catch up at most this many telemetry slots per wake-up.
MAX_BURST = 100
# How much warmer a device that runs hot (`--hot`) reports its temperature.
HOT_DEGREES = 20.0
RECENT_FOR_DUPLICATES = 16
_TIMESTAMP_FORMS = tuple(TimestampForm)


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    index: int  # position in the fleet, from 0
    device_id: str
    password: str | None
    spoof_as: str  # another device's id, for spoofed-payload bad messages


class _InflightWindow(PersistentStorage):  # type: ignore[misc]
    """gmqtt's QoS store, plus a signal when it has room.

    gmqtt never refuses a publish; without a cap a fast sender grows this store
    until packet ids run out (65 535) or memory does.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self.room = asyncio.Event()
        self.room.set()

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        if len(self._messages) >= self._limit:
            self.room.clear()

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        if len(self._messages) <= self._limit // 2:
            self.room.set()

    def clear(self) -> None:
        super().clear()
        self.room.set()


class _DeviceClient(gmqtt.Client):  # type: ignore[misc]
    """gmqtt's client, leaving reconnection to the device (SimulatedDevice.stay_connected)."""

    async def reconnect(self, delay: bool = False) -> None:
        return None


class SimulatedDevice:
    __slots__ = (
        "_answered",
        "_batch_form",
        "_boot_count",
        "_client",
        "_config",
        "_config_version",
        "_gone",
        "_heap_free",
        "_identity",
        "_last_ts_ms",
        "_lost",
        "_model",
        "_options",
        "_progress_topic",
        "_rebooting",
        "_recent",
        "_rng",
        "_started",
        "_telemetry_topic",
        "_topics",
        "_updates",
        "_window",
        "attempted",
        "stats",
    )

    def __init__(
        self,
        *,
        identity: DeviceIdentity,
        options: FleetOptions,
        seed: int,
        ota: OtaService | None = None,
    ) -> None:
        self._identity = identity
        self._options = options
        self._rebooting = False  # the connection closes for a reboot, not a fault
        self._rng = random.Random(seed)  # noqa: S311 -- simulated behaviour, not secrets
        self._topics = TopicScheme(prefix=options.topic_prefix)
        self._progress_topic = self._topics.uplink(identity.device_id, Uplink.OTA_PROGRESS)
        self._telemetry_topic = self._topics.uplink(identity.device_id, Uplink.TELEMETRY).encode()
        self._model = SensorModel(seed=seed, start_s=time.time())
        self._started = time.monotonic()
        self._boot_count = self._rng.randint(1, 40)
        self._heap_free = self._rng.randint(120_000, 200_000)
        self._last_ts_ms = 0
        self._batch_form = 0
        self._recent: deque[bytes] = deque(maxlen=RECENT_FOR_DUPLICATES)
        self._client: Any = None
        self._window = _InflightWindow(options.max_inflight)
        # Configuration applied (from devices/{id}/config) and commands answered, by id:
        # QoS 1 may deliver a command twice, and the answer must be the same.
        self._config: dict[str, Any] = {}
        self._config_version: int | None = None
        self._answered: dict[str, bytes] = {}
        self._lost = asyncio.Event()  # the current connection dropped
        self._gone = False  # dropped off on purpose (`drop`): never reconnects
        # Set once the first connection attempt has ended, whatever its outcome.
        self.attempted = asyncio.Event()
        self.stats = DeviceStats(
            device_id=identity.device_id,
            record_message_ids=options.record_message_ids,
            firmware_version=options.firmware_version,
        )
        self._updates = UpdateAgent(
            identity=UpdaterIdentity(identity.device_id, identity.password),
            options=options,
            service=ota,
            stats=self.stats,
            rng=self._rng,
            publish_progress=self._publish_progress,
            reboot=self._reboot,
        )

    @property
    def device_id(self) -> str:
        return self._identity.device_id

    # -- connection ---------------------------------------------------------

    async def connect(self, *, stop: asyncio.Event, gate: asyncio.Semaphore) -> bool:
        """Connect, retrying with capped jittered backoff until connected or stopped.

        `gate` bounds simultaneous handshakes so a large fleet does not hit the
        broker with thousands of CONNECTs in the same instant.
        """
        backoff = Backoff(cap=BACKOFF_CAP_S, start=1.0, rng=self._rng)
        version = MQTTv50 if self._options.mqtt_version is MqttVersion.V5 else MQTTv311
        while not stop.is_set():
            client = self._new_client()
            try:
                async with gate, asyncio.timeout(CONNECT_TIMEOUT_S):
                    await client.connect(
                        self._options.mqtt_host,
                        self._options.mqtt_port,
                        version=version,
                        keepalive=60,
                    )
            except (OSError, TimeoutError, gmqtt.MQTTConnectError) as exc:
                self._count_failed_attempt(exc)
                await _abandon(client)
                self.attempted.set()
                await sleep_unless(stop, backoff.next())
                continue
            self._lost.clear()
            self._client = client
            self.attempted.set()
            return True
        self.attempted.set()
        return False

    def _count_failed_attempt(self, exc: Exception) -> None:
        if isinstance(exc, gmqtt.MQTTConnectError):
            # The broker answered: bad credentials, not authorized (disabled, rotated,
            # or a client id other than the device id), ...
            reason = exc.message.removeprefix("Connection Refused: ").lower()
            self.stats.refused[reason] = self.stats.refused.get(reason, 0) + 1
            log.warning(
                "simulated device refused by the broker",
                extra={"device_id": self.device_id, "reason": reason},
            )
            return
        self.stats.connect_failures += 1
        log.warning(
            "simulated device failed to connect",
            extra={"device_id": self.device_id, "error": repr(exc)},
        )

    async def stay_connected(self, *, stop: asyncio.Event, gate: asyncio.Semaphore) -> None:
        """Reconnect whenever the connection drops, until stopped (run after `connect`)."""
        while not stop.is_set():
            await self._lost.wait()
            if stop.is_set() or self._gone:
                return
            if self._rebooting:
                self._rebooting = False
            else:
                self.stats.connections_lost += 1
                log.info(
                    "simulated device lost its connection", extra={"device_id": self.device_id}
                )
            dropped, self._client = self._client, None
            if dropped is not None:
                await _abandon(dropped)
            if not await self.connect(stop=stop, gate=gate):
                return

    def _new_client(self) -> Any:
        will = gmqtt.Message(
            self._topics.uplink(self.device_id, Uplink.STATUS),
            payloads.WILL_PAYLOAD,
            qos=1,
            retain=False,
        )
        client = _DeviceClient(
            self.device_id,  # its client id: brokers refuse any other
            clean_session=True,
            will_message=will,
            persistent_storage=self._window,
        )
        if self._identity.password is not None:
            client.set_auth_credentials(self.device_id, self._identity.password)
        client.set_config({"reconnect_delay": RECONNECT_DELAY_S})
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: Any, flags: int, rc: int, properties: Any) -> None:
        # Runs on every (re)connection, like firmware announcing itself after a reboot.
        self.stats.connected = True
        self.stats.ever_connected = True
        for kind in (Downlink.CONFIG, Downlink.COMMANDS, Downlink.OTA):
            client.subscribe(self._topics.downlink(self.device_id, kind), qos=1)
        self._publish_status(client)

    def _publish_status(self, client: Any) -> None:
        client.publish(
            self._topics.uplink(self.device_id, Uplink.STATUS),
            payloads.status_online(
                uptime_s=self._uptime_s(),
                heap_free=self._heap_free - self._rng.randint(0, 4_000),
                boot_count=self._boot_count,
                config_version=self._config_version,
                firmware_version=self.stats.firmware_version,
            ),
            qos=1,
        )
        self.stats.status_published += 1

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        if topic == self._topics.downlink(self.device_id, Downlink.OTA):
            self._updates.offered(payload)
            return 0
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("undecodable downlink", extra={"device_id": self.device_id, "topic": topic})
            return 0
        if not isinstance(message, dict):
            return 0
        if topic == self._topics.downlink(self.device_id, Downlink.CONFIG):
            self._apply_config(client, message)
        elif topic == self._topics.downlink(self.device_id, Downlink.COMMANDS):
            self._answer_command(client, message)
        return 0

    def _apply_config(self, client: Any, message: dict[str, Any]) -> None:
        """Take the configuration and report its version, as firmware would after applying."""
        version, config = message.get("version"), message.get("config")
        if not isinstance(version, int) or not isinstance(config, dict):
            return
        if version == self._config_version:
            return  # the retained copy again, after a reconnect
        self._config, self._config_version = config, version
        self.stats.configs_applied += 1
        self._publish_status(client)

    def _answer_command(self, client: Any, message: dict[str, Any]) -> None:
        command_id, name = message.get("command_id"), message.get("name")
        if not isinstance(command_id, str) or not isinstance(name, str):
            return
        answer = self._answered.get(command_id)
        if answer is None:
            params = message.get("params")
            answer = self._run_command(command_id, name, params if isinstance(params, dict) else {})
            self._answered[command_id] = answer
            self.stats.commands_answered += 1
        client.publish(self._topics.uplink(self.device_id, Uplink.COMMAND_RESULT), answer, qos=1)

    def _run_command(self, command_id: str, name: str, params: dict[str, Any]) -> bytes:
        if name == "ping":
            return payloads.command_result(command_id, succeeded=True, result={"pong": True})
        if name == "reboot":
            self._boot_count += 1
            self._started = time.monotonic()
            result = {"boot_count": self._boot_count}
            return payloads.command_result(command_id, succeeded=True, result=result)
        if name == "identify":
            seconds = params.get("seconds", 5)
            blinked: float = seconds if isinstance(seconds, int | float) else 5
            return payloads.command_result(
                command_id, succeeded=True, result={"blinked_s": blinked}
            )
        return payloads.command_result(
            command_id, succeeded=False, result={"error": f"unknown command {name!r}"}
        )

    # -- firmware updates ---------------------------------------------------

    def _publish_progress(self, payload: bytes) -> None:
        if self._client is None or not self.stats.connected:
            return  # firmware would report again once back; the simulator does not
        self._client.publish(self._progress_topic, payload, qos=1)

    async def _reboot(self, version: str) -> None:
        """Restart running `version`: offline, then back with it in the status."""
        self.stats.firmware_version = version
        log.info(
            "simulated device reboots",
            extra={"device_id": self.device_id, "firmware_version": self.stats.firmware_version},
        )
        client, self._client = self._client, None
        self.stats.connected = False
        if client is not None:
            await self._sign_off(client, "reboot")
        await asyncio.sleep(self._options.ota_boot_seconds)
        self._boot_count += 1
        self._started = time.monotonic()
        # stay_connected connects again, and _on_connect announces the version booted.
        self._rebooting = True
        self._lost.set()

    def _on_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        if client is not self._client:
            return  # a refused attempt, or a client already given up
        self.stats.connected = False
        self._lost.set()

    async def close(self, *, kill: bool) -> None:
        self._updates.stop()
        client = self._client
        if client is None:
            return
        self._client = None
        if kill or not self.stats.connected:
            await _abandon(client)
            self.stats.connected = False
            return
        await self._sign_off(client, "shutdown")
        self.stats.connected = False

    async def _sign_off(self, client: Any, when: str) -> None:
        """Say offline, wait for the broker to acknowledge everything (so a subscriber sees
        exactly what the report counts), and disconnect."""
        client.publish(
            self._topics.uplink(self.device_id, Uplink.STATUS),
            payloads.status_offline(uptime_s=self._uptime_s()),
            qos=1,
        )
        self.stats.status_published += 1
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await self._window.wait_empty()
        except TimeoutError:
            log.warning(f"unacknowledged publishes at {when}", extra={"device_id": self.device_id})
        await client.disconnect()

    @property
    def runs_hot(self) -> bool:
        return self._identity.index < self._options.hot

    @property
    def drops_off(self) -> bool:
        return self._identity.index >= self._options.devices - self._options.drop

    async def drop_off(self) -> None:
        """After `incident_after` seconds vanish as a device whose power failed: the
        connection closes without DISCONNECT (the broker sends the last will) and the
        device neither publishes nor reconnects again."""
        await asyncio.sleep(max(self._options.incident_after - self._elapsed_s(), 0.0))
        self._gone = True
        client, self._client = self._client, None
        self.stats.connected = False
        if client is not None:
            await _abandon(client)
        log.info("simulated device dropped off", extra={"device_id": self.device_id})

    def _elapsed_s(self) -> float:
        return time.monotonic() - self._started

    def _sample(self, timestamp_ms: int) -> Reading:
        reading = self._model.sample(timestamp_ms)
        if self.runs_hot and self._elapsed_s() >= self._options.incident_after:
            return replace(reading, temperature=round(reading.temperature + HOT_DEGREES, 2))
        return reading

    def _uptime_s(self) -> int:
        return int(time.monotonic() - self._started) + 3_600 * self._boot_count

    # -- traffic ------------------------------------------------------------

    async def publish_telemetry(self) -> None:
        """Publish at the configured rate until cancelled.

        Slots are laid on a fixed grid from a random phase, so devices do not
        fire together, and a late wake-up sends every slot it owes (up to a
        burst cap) rather than silently lowering the rate.
        """
        loop = asyncio.get_running_loop()
        rate = self._options.rate
        interval = 1.0 / rate
        start = loop.time() + self._rng.uniform(0.0, interval)
        qos = self._options.qos
        slot = 0
        while True:
            # floor, not int(): before the first slot the difference is negative.
            due = math.floor((loop.time() - start) * rate) + 1
            sent_this_wake = 0
            while slot < due and sent_this_wake < MAX_BURST:
                if qos and not self._window.room.is_set():
                    await self._window.room.wait()
                slot += 1
                sent_this_wake += 1
                if self._client is None or not self.stats.connected:
                    self.stats.dropped_offline += 1
                    continue
                self._send_slot(slot)
            jitter = self._rng.uniform(0.0, 0.05 * interval)
            await asyncio.sleep(max(start + slot * interval + jitter - loop.time(), 0.0))

    async def publish_heartbeats(self) -> None:
        interval = self._options.heartbeat_interval
        topic = self._topics.uplink(self.device_id, Uplink.HEARTBEAT)
        await asyncio.sleep(self._rng.uniform(0.5, 1.0) * interval)
        while True:
            if self._client is not None and self.stats.connected:
                self._client.publish(
                    topic, payloads.heartbeat(uptime_s=self._uptime_s()), qos=self._options.qos
                )
                self.stats.heartbeats += 1
            await asyncio.sleep(interval)

    def _next_timestamp_ms(self) -> int:
        # Strictly increasing per device, so no two readings share a timestamp.
        ts = max(int(time.time() * 1000.0), self._last_ts_ms + 1)
        self._last_ts_ms = ts
        return ts

    def _publish(self, payload: bytes) -> None:
        self._client.publish(gmqtt.Message(self._telemetry_topic, payload, qos=self._options.qos))

    def _send_slot(self, slot: int) -> None:
        options = self._options
        stats = self.stats
        if options.bad_every and slot % options.bad_every == 0:
            # Devices start at different points of the cycle so a small fleet
            # covers every kind quickly.
            kind = BAD_KINDS[(self._identity.index + stats.bad_total) % len(BAD_KINDS)]
            reading = self._sample(self._next_timestamp_ms())
            self._publish(
                payloads.bad_telemetry(
                    kind,
                    reading,
                    device_id=self.device_id,
                    message_id=str(uuid.uuid4()),
                    spoof_as=self._identity.spoof_as,
                )
            )
            stats.bad[kind] += 1
            return
        if options.duplicate_every and slot % options.duplicate_every == 0 and self._recent:
            self._publish(self._rng.choice(self._recent))
            stats.duplicates += 1
            return
        if options.batch_every and slot % options.batch_every == 0:
            self._send_batch()
            return
        message_id = str(uuid.uuid4())
        payload = payloads.telemetry(
            payloads.reading_object(
                self._sample(self._next_timestamp_ms()),
                device_id=self.device_id,
                message_id=message_id,
                form=_TIMESTAMP_FORMS[stats.telemetry_ok % 3],
                firmware_version=stats.firmware_version,
            )
        )
        self._publish(payload)
        self._recent.append(payload)
        stats.telemetry_ok += 1
        stats.readings += 1
        if stats.message_ids is not None:
            stats.message_ids.append(message_id)

    def _send_batch(self) -> None:
        """Readings sampled since the last message, as a device that buffers them would send."""
        size = self._options.batch_size
        previous = self._last_ts_ms or int(time.time() * 1000.0) - 1_000
        now = max(int(time.time() * 1000.0), previous + size)
        objs: list[dict[str, object]] = []
        ids: list[str] = []
        for i in range(1, size + 1):
            ts = max(previous + (now - previous) * i // size, self._last_ts_ms + 1)
            self._last_ts_ms = ts
            message_id = str(uuid.uuid4())
            ids.append(message_id)
            objs.append(
                payloads.reading_object(
                    self._sample(ts),
                    device_id=self.device_id,
                    message_id=message_id,
                    form=_TIMESTAMP_FORMS[(self._batch_form + i) % 3],
                    firmware_version=self.stats.firmware_version,
                )
            )
        self._batch_form += 1
        self._publish(payloads.batch(objs))
        stats = self.stats
        stats.telemetry_ok += 1
        stats.batches += 1
        stats.readings += size
        if stats.message_ids is not None:
            stats.message_ids.extend(ids)


async def _abandon(client: Any) -> None:
    """Close a client's socket without DISCONNECT and stop it from reconnecting."""
    client._is_active = False
    connection = client._connection
    if connection is not None and not connection.is_closing():
        await connection.close()
