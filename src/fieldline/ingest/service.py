"""The ingest service: every device uplink from the broker into the one writer.

A QoS 1 message is acknowledged to the broker only once its outcome (stored or
rejected) is committed: the handler awaits the batch and gmqtt sends PUBACK
when it returns. The session is persistent, so the broker queues while ingest
is away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311

from fieldline.broker.base import BrokerEndpoint, ServiceAccount
from fieldline.domain.devices import ConnectionStatus
from fieldline.domain.readings import Rejection, RejectReason
from fieldline.domain.topics import TopicScheme, Uplink
from fieldline.ingest.batcher import Batcher
from fieldline.ingest.decode import DecodeLimits, decode_status, decode_telemetry
from fieldline.ops.metrics import Metrics
from fieldline.storage.writer import DeviceReadings, Presence, RejectedMessage

log = logging.getLogger(__name__)

PUBACK_SUCCESS = 0
CONNECT_TIMEOUT_SECONDS = 30.0
# The broker may have this many unacknowledged messages in flight to ingest.
RECEIVE_MAXIMUM = 20_000


class IngestConsumer:
    """Decodes uplink messages and hands their outcomes to the batcher."""

    def __init__(
        self, *, batcher: Batcher, topics: TopicScheme, limits: DecodeLimits, metrics: Metrics
    ) -> None:
        self._batcher = batcher
        self._topics = topics
        self._limits = limits
        self._metrics = metrics
        # Bound once: a labels() lookup per message shows in ingest profiles.
        self._received = {
            kind: metrics.messages_received.labels(kind=kind.value) for kind in Uplink
        }

    async def handle(self, topic: str, payload: bytes) -> None:
        received_at = datetime.now(UTC)
        parsed = self._topics.parse_uplink(topic)
        if parsed is None:
            self._metrics.messages_received.labels(kind="unknown").inc()
            await self._reject(
                topic,
                None,
                payload,
                received_at,
                Rejection(RejectReason.UNKNOWN_TOPIC, "not a device uplink topic"),
            )
            return
        device_id, kind = parsed
        self._received[kind].inc()
        if kind is Uplink.TELEMETRY:
            outcome = decode_telemetry(
                payload, device_id=device_id, received_at=received_at, limits=self._limits
            )
            if isinstance(outcome, Rejection):
                await self._reject(topic, device_id, payload, received_at, outcome)
                return
            firmware = next(
                (
                    r.attributes["firmware_version"]
                    for r in reversed(outcome)
                    if "firmware_version" in r.attributes
                ),
                None,
            )
            await self._batcher.add(
                telemetry=DeviceReadings(device_id, received_at, outcome),
                presence=Presence(device_id, received_at, firmware_version=firmware),
            )
        elif kind is Uplink.STATUS:
            status = decode_status(payload, device_id=device_id, limits=self._limits)
            if isinstance(status, Rejection):
                await self._reject(topic, device_id, payload, received_at, status)
                return
            reported = ConnectionStatus.ONLINE if status.online else ConnectionStatus.OFFLINE
            await self._batcher.add(
                presence=Presence(
                    device_id,
                    received_at,
                    reported=reported,
                    firmware_version=status.firmware_version,
                    attributes=status.attributes,
                )
            )
        elif kind is Uplink.HEARTBEAT:
            if len(payload) > self._limits.max_payload_bytes:
                await self._reject(
                    topic,
                    device_id,
                    payload,
                    received_at,
                    Rejection(RejectReason.TOO_LARGE, "heartbeat payload is too large"),
                )
                return
            await self._batcher.add(presence=Presence(device_id, received_at))
        else:
            # Command results are handled by the lifecycle service; keep them visible meanwhile.
            await self._batcher.add(presence=Presence(device_id, received_at))

    async def _reject(
        self,
        topic: str,
        device_id: str | None,
        payload: bytes,
        received_at: datetime,
        rejection: Rejection,
    ) -> None:
        self._metrics.messages_rejected.labels(reason=rejection.reason.value).inc()
        log.info(
            "message rejected",
            extra={"device_id": device_id, "topic": topic, "reason": rejection.reason.value},
        )
        await self._batcher.add(
            rejected=RejectedMessage(
                received_at, device_id, topic, rejection.reason.value, rejection.detail, payload
            ),
            presence=Presence(device_id, received_at) if device_id else None,
        )


def decode_limits(max_payload_bytes: int, max_future_skew_seconds: float) -> DecodeLimits:
    return DecodeLimits(
        max_payload_bytes=max_payload_bytes,
        max_future_skew=timedelta(seconds=max_future_skew_seconds),
    )


async def consume(
    *,
    consumer: IngestConsumer,
    endpoint: BrokerEndpoint,
    service: ServiceAccount,
    topics: TopicScheme,
    client_id: str,
    stopping: asyncio.Event,
    drain: Callable[[], Awaitable[None]],
) -> None:
    """Subscribe to every uplink and feed `consumer` until `stopping` is set.

    On stop, `drain` writes what was received, so its acknowledgements go out
    before the connection closes.
    """

    async def on_message(
        _client: gmqtt.Client, topic: str, payload: bytes, _qos: int, _properties: object
    ) -> int:
        try:
            await consumer.handle(topic, payload)
        except Exception:
            # Not acknowledged: the broker redelivers after a reconnect.
            log.exception("ingest failed to handle a message", extra={"topic": topic})
            raise
        return PUBACK_SUCCESS

    client = gmqtt.Client(
        client_id,
        clean_session=False,
        optimistic_acknowledgement=False,
        **(
            {"session_expiry_interval": 0xFFFFFFFF, "receive_maximum": RECEIVE_MAXIMUM}
            if endpoint.mqtt5
            else {}
        ),
    )
    client.set_auth_credentials(service.username, service.password)
    client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
    client.on_message = on_message

    def on_connect(_client: gmqtt.Client, _flags: int, _rc: int, _props: object) -> None:
        for topic in topics.ingest_filters():
            client.subscribe(topic, qos=1)
        log.info("ingest connected to broker", extra={"host": endpoint.host, "port": endpoint.port})

    client.on_connect = on_connect
    await asyncio.wait_for(
        client.connect(
            endpoint.host, endpoint.port, version=MQTTv50 if endpoint.mqtt5 else MQTTv311
        ),
        timeout=CONNECT_TIMEOUT_SECONDS,
    )
    try:
        await stopping.wait()
        await drain()
        await asyncio.sleep(0.1)  # let the last PUBACKs leave
    finally:
        await client.disconnect()
