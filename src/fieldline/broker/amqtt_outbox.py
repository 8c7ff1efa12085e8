"""What amqtt's broker keeps for a persistent session until its client acknowledges it.

amqtt 0.12 forgets a QoS 1 message that is not acknowledged within 5 seconds or whose
subscriber's connection drops, and has no limit in flight; `AmqttServer`
(amqtt_server.py) sends a persistent session's QoS 1 messages from an `Outbox` instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from functools import partial
from typing import Any

logger = logging.getLogger(__name__)

PUBLISH_QOS_1 = 0x32  # PUBLISH packet type, QoS 1
PUBLISH_DUP = 0x08
MAX_PACKET_ID = 65_535


def encode_publish(topic: str, payload: bytes, packet_id: int, *, dup: bool) -> bytes:
    """An MQTT 3.1.1 QoS 1 PUBLISH packet."""
    name = topic.encode()
    remaining = 2 + len(name) + 2 + len(payload)
    header = bytearray((PUBLISH_QOS_1 | (PUBLISH_DUP if dup else 0),))
    while True:  # the remaining length, 7 bits a byte
        byte, remaining = remaining & 0x7F, remaining >> 7
        header.append(byte | 0x80 if remaining else byte)
        if not remaining:
            break
    return b"".join(
        (header, len(name).to_bytes(2, "big"), name, packet_id.to_bytes(2, "big"), payload)
    )


class Outbox:
    """QoS 1 messages for one persistent session, each kept until the client acknowledges it.

    While the client is connected, one task sends: first what was sent before and
    not acknowledged (the connection dropped), then the queue, keeping at most
    `max_inflight` unacknowledged. The broker process holds it all in memory.
    """

    def __init__(self, client_id: str, max_inflight: int) -> None:
        self._client_id = client_id
        self._max_inflight = max_inflight
        self._queued: deque[tuple[str, bytes]] = deque()
        # Sent and not acknowledged, by packet id, in the order they were sent.
        self._inflight: dict[int, tuple[str, bytes]] = {}
        self._packet_id = 0
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._handler: Any = None
        # The current connection's PUBACK waiters (amqtt's, by packet id): amqtt's reader
        # completes a future registered there when the PUBACK arrives, and cancels them
        # all when the connection ends.
        self._waiters: dict[int, asyncio.Future[Any]] | None = None

    def __len__(self) -> int:
        return len(self._queued) + len(self._inflight)

    def put(self, topic: str, payload: bytes) -> None:
        self._queued.append((topic, payload))
        self._wakeup.set()

    def attach(self, handler: Any) -> None:
        """Send over this connection (amqtt's BrokerProtocolHandler) until it is detached."""
        self.detach()
        self._handler = handler
        self._waiters = handler._puback_waiters
        self._sender = asyncio.create_task(
            self._send(handler), name=f"amqtt-outbox-{self._client_id}"
        )

    def detach(self, handler: Any = None) -> None:
        """Stop sending; given `handler`, only if still sending over it (not a newer one)."""
        if self._sender is None or (handler is not None and handler is not self._handler):
            return
        self._sender.cancel()
        self._sender = self._handler = self._waiters = None

    async def _send(self, handler: Any) -> None:
        # What is unacknowledged stays, and goes out again on the next connection.
        try:
            await self._send_until_closed(handler.writer, handler._puback_waiters)
        except (ConnectionError, OSError) as exc:
            logger.debug(
                "outbox connection lost", extra={"client_id": self._client_id, "error": exc}
            )
        except Exception:
            logger.exception("outbox stopped sending", extra={"client_id": self._client_id})

    async def _send_until_closed(
        self, writer: Any, waiters: dict[int, asyncio.Future[Any]]
    ) -> None:
        loop = asyncio.get_running_loop()
        for packet_id, (topic, payload) in self._inflight.items():
            writer.write(encode_publish(topic, payload, packet_id, dup=True))
            self._await_ack(loop, waiters, packet_id)
        while True:
            while self._queued and len(self._inflight) < self._max_inflight:
                topic, payload = self._queued.popleft()
                packet_id = self._next_packet_id()
                self._inflight[packet_id] = (topic, payload)
                writer.write(encode_publish(topic, payload, packet_id, dup=False))
                self._await_ack(loop, waiters, packet_id)
            await writer.drain()
            if not self._queued or len(self._inflight) >= self._max_inflight:
                self._wakeup.clear()
                await self._wakeup.wait()

    def _await_ack(
        self,
        loop: asyncio.AbstractEventLoop,
        waiters: dict[int, asyncio.Future[Any]],
        packet_id: int,
    ) -> None:
        waiter = loop.create_future()
        waiters[packet_id] = waiter
        waiter.add_done_callback(partial(self._acknowledged, waiters, packet_id))

    def _acknowledged(
        self, waiters: dict[int, asyncio.Future[Any]], packet_id: int, waiter: asyncio.Future[Any]
    ) -> None:
        if waiter.cancelled() or waiters is not self._waiters:
            return  # the connection ended: sent again on the next one
        waiters.pop(packet_id, None)
        if self._inflight.pop(packet_id, None) is not None:
            self._wakeup.set()

    def _next_packet_id(self) -> int:
        packet_id = self._packet_id
        while True:
            packet_id = packet_id % MAX_PACKET_ID + 1
            if packet_id not in self._inflight:
                self._packet_id = packet_id
                return packet_id
