"""amqtt's broker with the delivery fieldline promises, and less work per message.

amqtt 0.12 acknowledges a QoS 1 PUBLISH once it is queued in the publisher's
session, and drops what is still queued there when the publisher disconnects. It
sends QoS 1 messages to a subscriber with no limit in flight (past 65,535 it runs
out of packet ids and drops them), and forgets one that is not acknowledged
within 5 seconds or whose connection drops: a restarted ingest would never get
it again. It also runs every topic check through its plugin manager as tasks.
Here instead:

- what a publisher was acknowledged for is routed before its session ends;
- a persistent session (clean session false) is sent QoS 1 messages from an
  `Outbox` that keeps each one until the client acknowledges it, sends the
  unacknowledged ones again (DUP) when the client comes back, and has at most
  `max_inflight` unacknowledged at a time;
- topic checks ask the registry's `AccessRules` directly.

These replace amqtt internals (`_client_message_loop`, `_broadcast_message`,
`_topic_filtering`, `_publish_session_retained_messages`, `_cleanup_session`,
`_delete_session`), and skip its MESSAGE_RECEIVED and MESSAGE_BROADCAST plugin
events, which no plugin here uses. amqtt is pinned below 0.13: an upgrade must
keep tests/broker and tests/e2e green.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.contexts import Action, BrokerConfig
from amqtt.mqtt.constants import QOS_1
from amqtt.session import ApplicationMessage, Session

logger = logging.getLogger(__name__)

PUBLISH_QOS_1 = 0x32  # PUBLISH packet type, QoS 1
PUBLISH_DUP = 0x08
MAX_PACKET_ID = 65_535


class TopicRules(Protocol):
    def allowed(self, username: str | None, topic: str, action: Action) -> bool: ...


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


class AmqttServer(Broker):  # type: ignore[misc]
    """amqtt's broker, routing by `rules` with persistent sessions served from outboxes."""

    def __init__(self, config: BrokerConfig, *, rules: TopicRules, max_inflight: int) -> None:
        super().__init__(config)
        self._rules = rules
        self._max_inflight = min(max_inflight, MAX_PACKET_ID)
        self._outboxes: dict[str, Outbox] = {}
        self._publishing: set[asyncio.Task[Any]] = set()

    async def keep_session(self, client_id: str, *, username: str, filters: list[str]) -> None:
        """A persistent session subscribed to `filters` at QoS 1 before its client first
        connects: what is published from now on waits for it. (amqtt keeps nothing
        across a restart, so a client's session is otherwise new at every start.)"""
        handler, session = self.create_offline_session(client_id)
        session.username = username
        session.clean_session = False
        self._sessions[client_id] = (session, handler)
        for topic_filter in filters:
            await self.add_subscription((topic_filter, QOS_1), session)

    def undelivered(self, client_id: str) -> int:
        """Messages for `client_id`'s persistent session it has not acknowledged yet."""
        outbox = self._outboxes.get(client_id)
        return len(outbox) if outbox is not None else 0

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        return self._rules.allowed(session.username, topic, action)

    async def _client_message_loop(self, client_session: Session, handler: Any) -> None:
        """Serve one connection's publishes and (un)subscriptions until it ends.

        A task per concern, where amqtt waits on four futures for every message; once
        the connection has ended, the messages it was acknowledged for are routed.
        """
        tasks = [
            asyncio.create_task(self._route_published(client_session)),
            asyncio.create_task(
                self._serve(
                    handler.get_next_pending_subscription,
                    partial(self._handle_subscription, client_session, handler),
                )
            ),
            asyncio.create_task(
                self._serve(
                    handler.get_next_pending_unsubscription,
                    partial(self._handle_unsubscription, client_session, handler),
                )
            ),
        ]
        try:
            disconnect = await handler.wait_disconnect()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        queue = client_session.delivered_message_queue
        while not queue.empty():
            await self._route(client_session, queue.get_nowait())
        outbox = self._outboxes.get(client_session.client_id)
        if outbox is not None:
            outbox.detach(handler)
        await self._handle_disconnect(client_session, handler, _done(disconnect))
        # The reader may have acknowledged more until amqtt stopped it just now.
        while not queue.empty():
            await self._route(client_session, queue.get_nowait())

    async def _serve(self, next_request: Callable[[], Any], handle: Callable[[Any], Any]) -> None:
        while True:
            await handle(_done(await next_request()))

    async def _route_published(self, session: Session) -> None:
        queue = session.delivered_message_queue
        while True:
            message = await queue.get()
            if not await self._route(session, message):
                # amqtt's answer to a publish it must refuse: end the connection.
                handler = self._get_handler(session)
                if handler is not None:
                    await handler.handle_connection_closed()
                return

    async def _route(self, session: Session, message: ApplicationMessage) -> bool:
        """Deliver a message a client published; False when it must be disconnected."""
        topic = message.topic
        if not topic or "#" in topic or "+" in topic or topic.startswith("$"):
            logger.warning(
                "publish to an invalid topic refused",
                extra={"client_id": session.client_id, "topic": topic},
            )
            return False
        if not self._rules.allowed(session.username, topic, Action.PUBLISH):
            logger.info(
                "publish refused by the access rules",
                extra={"client_id": session.client_id, "topic": topic},
            )
            return True
        self._fan_out(topic, message.data, None)
        if message.publish_packet is not None and message.publish_packet.retain_flag:
            await self.retain_message(session, topic, message.data, message.qos)
        return True

    async def _broadcast_message(
        self,
        session: Session | None,
        topic: str | None,
        data: bytes | bytearray | None,
        force_qos: int | None = None,
    ) -> None:
        # amqtt's other senders (will messages) route the same way, at once.
        if topic is not None and data is not None:
            self._fan_out(topic, data, force_qos)

    def _fan_out(self, topic: str, data: bytes | bytearray, force_qos: int | None) -> None:
        payload = bytes(data)
        for topic_filter, subscriptions in self._subscriptions.items():
            if not self._matches(topic, topic_filter):
                continue
            for target, granted in subscriptions:
                qos = granted if force_qos is None else force_qos
                if not self._rules.allowed(target.username, topic, Action.RECEIVE):
                    continue
                persistent = not target.clean_session and not target.is_anonymous
                if qos == QOS_1 and persistent:
                    self._outbox(target.client_id).put(topic, payload)
                elif target.transitions.state == "connected":
                    handler = self._get_handler(target)
                    if handler is not None:
                        self._publish(handler.mqtt_publish(topic, payload, qos, retain=False))
                elif qos and persistent:  # QoS 2 for an absent session: amqtt's own queue
                    target.retained_messages.put_nowait(
                        RetainedApplicationMessage(None, topic, payload, qos)
                    )

    def _publish(self, sending: Any) -> None:
        task = asyncio.ensure_future(sending)
        self._publishing.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task[Any]) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("amqtt could not deliver a message", extra={"error": task.exception()})

    def _outbox(self, client_id: str) -> Outbox:
        outbox = self._outboxes.get(client_id)
        if outbox is None:
            outbox = self._outboxes[client_id] = Outbox(client_id, self._max_inflight)
        return outbox

    async def _publish_session_retained_messages(self, session: Session) -> None:
        # Called by amqtt each time a client has connected: the outbox sends from now on.
        await super()._publish_session_retained_messages(session)
        if session.clean_session or session.is_anonymous:
            return
        handler = self._get_handler(session)
        if handler is not None:
            self._outbox(session.client_id).attach(handler)

    async def _delete_session(self, client_id: str) -> None:
        self._forget_outbox(client_id)
        await super()._delete_session(client_id)

    async def _cleanup_session(self, client_id: str) -> None:
        self._forget_outbox(client_id)
        await super()._cleanup_session(client_id)

    def _forget_outbox(self, client_id: str) -> None:
        outbox = self._outboxes.pop(client_id, None)
        if outbox is not None:
            outbox.detach()
            if len(outbox):
                logger.warning(
                    "session ended with messages undelivered",
                    extra={"client_id": client_id, "messages": len(outbox)},
                )

    async def shutdown(self) -> None:
        for task in list(self._publishing):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._publishing, return_exceptions=True)
        await super().shutdown()


def _done(value: Any) -> asyncio.Future[Any]:
    """A future already holding `value`: amqtt's handlers take their input that way."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future
