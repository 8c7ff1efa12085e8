"""The ingest service: every device uplink from the broker into the one writer.

A QoS 1 message is acknowledged to the broker only once its outcome (stored or
rejected) is committed: each delivery is decoded and queued into the open
batch at once, and the batch's PUBACKs are sent together when it commits. The
session is persistent, so the broker queues while ingest is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError

from fieldline.broker.base import BrokerEndpoint, ServiceAccount
from fieldline.domain.readings import Rejection, RejectReason
from fieldline.domain.topics import TopicScheme, Uplink
from fieldline.ingest.batcher import Batcher
from fieldline.ingest.consumer import UplinkConsumer
from fieldline.ingest.decode import DecodeLimits
from fieldline.ingest.ratelimit import DeviceRateLimiter
from fieldline.ops.backoff import Backoff, sleep_unless
from fieldline.ops.metrics import Metrics

log = logging.getLogger(__name__)

PUBACK_SUCCESS = 0
# PUBACK's fixed header: type 4, remaining length 2 (the packet id; success implied).
PUBACK_HEADER = b"\x40\x02"
CONNECT_TIMEOUT_SECONDS = 30.0
CONNECT_BACKOFF_CAP_SECONDS = 15.0
MAX_RECEIVE_MAXIMUM = 65_535  # the largest value MQTT 5 allows
SESSION_NEVER_EXPIRES = 0xFFFFFFFF
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason code
# MQTT 3.1.1 brokers close a taken-over connection without a word: connections that end
# this soon after they began, this many times in a row, are read as a take-over.
SHORT_CONNECTION_SECONDS = 10.0
SHORT_CONNECTIONS_MEAN_TAKEOVER = 3
UNKNOWN_TOPIC = Rejection(RejectReason.UNKNOWN_TOPIC, "not a device uplink topic")


class IngestConsumer:
    """MQTT's door to the one consumer: a delivery's topic names its device and kind,
    what it becomes (ingest/consumer.py) goes to the batcher."""

    def __init__(
        self,
        *,
        batcher: Batcher,
        topics: TopicScheme,
        limits: DecodeLimits,
        metrics: Metrics,
        rate_limiter: DeviceRateLimiter | None = None,
    ) -> None:
        self._batcher = batcher
        self._topics = topics
        self._metrics = metrics
        # Bound once: a labels() lookup per message shows in ingest profiles.
        self._received = {
            kind: metrics.messages_received.labels(kind=kind.value) for kind in Uplink
        }
        self._uplinks = UplinkConsumer(
            limits=limits,
            rate_limiter=rate_limiter,
            presence_limiter=(
                DeviceRateLimiter(rate_limiter.rate, rate_limiter.burst)
                if rate_limiter is not None
                else None
            ),
            limit_by_sent_time=True,
        )

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    @property
    def has_room(self) -> bool:
        return self._batcher.has_room

    def on_room(self, callback: Callable[[], None]) -> None:
        self._batcher.on_room(callback)

    async def handle(self, topic: str, payload: bytes) -> None:
        """Queue a message's outcome, waiting for room; return once it is committed."""
        await self._batcher.wait_for_room()
        await self.submit(topic, payload)

    def submit(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Decode a message and queue its outcome now; answer its batch's commit."""
        received_at = datetime.now(UTC)
        parsed = self._topics.parse_uplink(topic)
        if parsed is None:
            self._metrics.messages_received.labels(kind="unknown").inc()
            return self._batcher.add(
                self._uplinks.reject(topic, None, payload, received_at, UNKNOWN_TOPIC)
            )
        device_id, kind = parsed
        self._received[kind].inc()
        return self._batcher.add(
            self._uplinks.consume(device_id, kind, topic, payload, received_at)
        )


def subscription_filters(topics: TopicScheme, share_group: str | None) -> list[str]:
    """Every uplink filter, inside `$share/<group>/` when ingest processes share the load."""
    plain = topics.ingest_filters()
    return [f"$share/{share_group}/{f}" for f in plain] if share_group else plain


async def consume(
    *,
    consumer: IngestConsumer,
    endpoint: BrokerEndpoint,
    service: ServiceAccount,
    topics: TopicScheme,
    client_id: str,
    share_group: str | None,
    receive_maximum: int,
    stopping: asyncio.Event,
    drain: Callable[[], Awaitable[None]],
    connected: asyncio.Event | None = None,
    on_connection: Callable[[bool], None] | None = None,
    retire_when_idle: float | None = None,
) -> None:
    """Subscribe to every uplink and feed `consumer` until `stopping` is set.

    The session is persistent under `client_id`: while this process is away the
    broker keeps its queue, and what was delivered but not acknowledged comes
    again (the ledger drops what was already stored). `receive_maximum` caps
    the unacknowledged messages the broker sends at once, which bounds memory
    while the database is slow. On stop, `drain` writes what was received, so
    its acknowledgements go out before the connection closes.

    `retire_when_idle` retires this instance for good instead: it leaves the
    shared subscription (so nothing more is routed to it), stores what its
    session had queued, and once nothing has arrived for that many seconds,
    ends the session at the broker.
    """
    if share_group and not endpoint.mqtt5:
        log.warning(
            "the broker has no shared subscriptions (MQTT 3.1.1); run one ingest process",
            extra={"share_group": share_group},
        )
        share_group = None
    session = _Session(
        consumer=consumer,
        metrics=consumer.metrics,
        client_id=client_id,
        filters=subscription_filters(topics, share_group),
        # A session once subscribed the other way would get every message twice.
        stale=subscription_filters(topics, None if share_group else "fieldline"),
        connected=connected or asyncio.Event(),
        on_connection=on_connection,
        leaving=retire_when_idle is not None,
        stopping=stopping,
    )
    client = _IngestClient(
        client_id,
        clean_session=False,
        optimistic_acknowledgement=False,
        **(
            {
                "session_expiry_interval": SESSION_NEVER_EXPIRES,
                "receive_maximum": min(receive_maximum, MAX_RECEIVE_MAXIMUM),
            }
            if endpoint.mqtt5
            else {}
        ),
    )
    client.set_auth_credentials(service.username, service.password)
    client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
    client.on_message = session.on_message
    client.on_delivery = session.on_delivery
    session.client = client
    client.on_connect = session.on_connect
    client.on_disconnect = session.on_disconnect
    host, port, tls = endpoint.client_target()
    if not await _connect_until_stopped(client, host, port, tls, endpoint.mqtt5, stopping):
        return
    if retire_when_idle is None:
        try:
            await stopping.wait()
            await drain()
            await asyncio.sleep(0.1)  # let the last PUBACKs leave
        finally:
            await client.disconnect()
        return
    try:
        await session.quiet_for(retire_when_idle)
        await drain()
        await asyncio.sleep(0.1)
    except BaseException:
        await client.disconnect()  # the session stays: a later retire finishes the job
        raise
    # Session expiry 0 on DISCONNECT: the broker forgets the session and its queue.
    await client.disconnect(session_expiry_interval=0)
    log.info("ingest instance retired", extra={"client_id": client_id})


class _IngestClient(gmqtt.Client):  # type: ignore[misc]
    """gmqtt's client, with QoS 1 deliveries handed to fieldline directly.

    gmqtt runs an async `on_message` as a task per message and sends each PUBACK
    in a write of its own; at tens of thousands of messages a second that
    machinery costs more than decoding. Here a delivery is decoded and queued
    at once, and the PUBACKs of a committed batch leave together in one write.
    These are gmqtt internals (`_package_handler._handle_qos_1_publish_packet`,
    `_connection`):
    a gmqtt upgrade must keep tests/ingest and tests/faults green.
    """

    on_delivery: Callable[[int, str, bytes], None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The packet handler is gmqtt's own object: its QoS 1 step becomes ours.
        self._package_handler._handle_qos_1_publish_packet = self._deliver

    def _deliver(
        self, mid: int, packet: bytes, print_topic: str | bytes, properties: object
    ) -> None:
        topic = (
            print_topic
            if isinstance(print_topic, str)
            else print_topic.decode("utf-8", errors="replace")
        )
        self.on_delivery(mid, topic, packet)

    def send_pubacks(self, mids: list[int]) -> None:
        """PUBACK (success) for each packet id, in one write; after a reconnect the
        broker resends what was unacknowledged under the same ids."""
        connection = self._connection
        if connection is None or connection.is_closing():
            return
        connection.send_package(b"".join(PUBACK_HEADER + mid.to_bytes(2, "big") for mid in mids))

    def pause_reading(self) -> None:
        if self._connection is not None:
            self._connection._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._connection is not None and not self._connection.is_closing():
            self._connection._transport.resume_reading()


class _Session:
    """gmqtt's callbacks for the ingest session.

    They also watch the session itself: another connection under ingest's client id
    takes it over (only fieldline's service account may use that id, but two ingest
    processes given the same instance name do), and a broker restarted without its
    persistence forgets it with everything queued for ingest. Both are logged as
    warnings and counted in `fieldline_ingest_session_losses_total`.
    """

    def __init__(
        self,
        *,
        consumer: IngestConsumer,
        metrics: Metrics,
        client_id: str,
        filters: list[str],
        stale: list[str],
        connected: asyncio.Event,
        on_connection: Callable[[bool], None] | None,
        leaving: bool,
        stopping: asyncio.Event,
    ) -> None:
        self._consumer = consumer
        self._losses = metrics.session_losses
        self._client_id = client_id
        self._filters = filters
        self._stale = stale
        self._connected = connected
        self._on_connection = on_connection
        self._leaving = leaving
        self._stopping = stopping
        self._last_message = time.monotonic()
        self._arrived = asyncio.Event()
        self._connected_since: float | None = None  # None: not connected
        self._held_session = False  # an earlier connection of this process held the session
        self._short_connections = 0  # in a row
        self.client: _IngestClient | None = None
        # Packet ids waiting for each batch's commit, keyed by the batch's future.
        self._unacknowledged: dict[asyncio.Future[None], list[int]] = {}

    def on_delivery(self, mid: int, topic: str, payload: bytes) -> None:
        """A QoS 1 message: queue it; its PUBACK leaves once its batch is committed."""
        self._last_message = time.monotonic()
        self._arrived.set()
        try:
            committed = self._consumer.submit(topic, payload)
        except Exception:
            # Not acknowledged: the broker redelivers after a reconnect.
            log.exception("ingest failed to handle a message", extra={"topic": topic})
            return
        mids = self._unacknowledged.get(committed)
        if mids is None:
            mids = self._unacknowledged[committed] = []
            committed.add_done_callback(self._acknowledge)
        mids.append(mid)
        if not self._consumer.has_room and self.client is not None:
            # Only a broker without MQTT 5's receive maximum sends this far ahead.
            self.client.pause_reading()
            self._consumer.on_room(self.client.resume_reading)

    def _acknowledge(self, committed: asyncio.Future[None]) -> None:
        mids = self._unacknowledged.pop(committed, [])
        if self.client is not None and not committed.cancelled() and committed.exception() is None:
            self.client.send_pubacks(mids)

    async def on_message(
        self, _client: gmqtt.Client, topic: str, payload: bytes, _qos: int, _props: object
    ) -> int:
        """QoS 0 deliveries (devices that publish at QoS 0): nothing to acknowledge."""
        self._last_message = time.monotonic()
        self._arrived.set()
        try:
            await self._consumer.handle(topic, payload)
        except Exception:
            # Not acknowledged: the broker redelivers after a reconnect.
            log.exception("ingest failed to handle a message", extra={"topic": topic})
            raise
        return PUBACK_SUCCESS

    def on_connect(
        self, client: gmqtt.Client, session_present: int, _rc: int, _props: object
    ) -> None:
        if self._held_session and not session_present:
            self._session_lost(
                "not_present",
                "the broker had no session for ingest at reconnect: what it queued for "
                "ingest meanwhile is lost",
                evidence="CONNACK session present 0",
            )
        self._held_session = True  # persistent: the broker keeps it from now on
        self._connected_since = time.monotonic()
        if self._leaving:
            client.unsubscribe([*self._filters, *self._stale])
        else:
            client.unsubscribe(self._stale)
            for topic in self._filters:
                client.subscribe(topic, qos=1)
        self._connected.set()
        if self._on_connection is not None:
            self._on_connection(True)
        log.info(
            "ingest connected to broker",
            extra={
                "client_id": self._client_id,
                "filters": self._filters,
                "leaving": self._leaving,
            },
        )

    def on_disconnect(self, _client: gmqtt.Client, packet: object, _exc: object = None) -> None:
        # gmqtt reports a broker's DISCONNECT and then the socket's close: one loss.
        if self._connected_since is None:
            return
        lasted = time.monotonic() - self._connected_since
        self._connected_since = None
        self._connected.clear()
        if self._on_connection is not None:
            self._on_connection(False)
        if self._stopping.is_set():
            return
        reason = packet[0] if isinstance(packet, bytes | bytearray) and packet else None
        log.warning(
            "ingest lost the broker; reconnecting",
            extra={"client_id": self._client_id, "reason_code": reason},
        )
        self._short_connections = (
            self._short_connections + 1 if lasted < SHORT_CONNECTION_SECONDS else 0
        )
        if reason == SESSION_TAKEN_OVER:
            self._short_connections = 0
            self._session_lost(
                "taken_over",
                "ingest's broker session was taken over: another client connected with its "
                "client id (two ingest processes with the same FIELDLINE_INGEST_INSTANCE?)",
                evidence="DISCONNECT reason 0x8E, session taken over",
            )
        elif self._short_connections >= SHORT_CONNECTIONS_MEAN_TAKEOVER:
            evidence = f"{self._short_connections} connections in a row dropped within seconds"
            self._short_connections = 0
            self._session_lost(
                "taken_over",
                "ingest's broker connection keeps being dropped right after it connects: "
                "another client is probably taking over its session with its client id",
                evidence=evidence,
            )

    def _session_lost(self, cause: str, message: str, *, evidence: str) -> None:
        self._losses.labels(cause=cause).inc()
        log.warning(message, extra={"client_id": self._client_id, "evidence": evidence})

    async def quiet_for(self, seconds: float) -> None:
        """Return once no message has arrived for `seconds` (or on stop)."""
        while not self._stopping.is_set():
            remaining = self._last_message + seconds - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=remaining)


async def _connect_until_stopped(
    client: gmqtt.Client,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    mqtt5: bool,
    stopping: asyncio.Event,
) -> bool:
    """Connect, retrying with capped, jittered backoff while the broker is unreachable."""
    backoff = Backoff(cap=CONNECT_BACKOFF_CAP_SECONDS)
    while not stopping.is_set():
        try:
            await asyncio.wait_for(
                client.connect(
                    host, port, ssl=tls or False, version=MQTTv50 if mqtt5 else MQTTv311
                ),
                timeout=CONNECT_TIMEOUT_SECONDS,
            )
            return True
        except (OSError, TimeoutError, MQTTConnectError) as exc:
            wait = backoff.next()
            log.warning(
                "ingest cannot reach the broker; retrying",
                extra={"host": host, "port": port, "error": str(exc), "retry_in": round(wait, 2)},
            )
            with contextlib.suppress(Exception):
                await client.disconnect()  # gmqtt may hold a half-open socket
            await sleep_unless(stopping, wait)
    return False
