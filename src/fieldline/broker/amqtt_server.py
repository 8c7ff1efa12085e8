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
  `Outbox` (amqtt_outbox.py) that keeps each one until the client acknowledges
  it, sends the unacknowledged ones again (DUP) when the client comes back, and
  has at most `max_inflight` unacknowledged at a time;
- topic checks ask the registry's `AccessRules` directly;
- a CONNECT is authenticated before the session of its client id is looked up:
  amqtt deletes that session (clean session) or takes it on (persistent) first and
  authenticates after, so one refused CONNECT under ingest's client id silently
  ended ingest's subscriptions. A refused one here is answered "not authorized"
  and closed without touching any session; an accepted clean-session CONNECT
  disconnects the client connected under its id ([MQTT-3.1.4-2]), where amqtt
  deleted that client's session and left it connected, receiving nothing.

These replace amqtt internals (`_initialize_client_session`, `_client_message_loop`,
`_broadcast_message`, `_topic_filtering`, `_publish_session_retained_messages`,
`_cleanup_session`, `_delete_session`), and skip its MESSAGE_RECEIVED and
MESSAGE_BROADCAST plugin events, which no plugin here uses. amqtt is pinned below
0.13: an upgrade must keep tests/broker and tests/e2e green.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.contexts import Action, BrokerConfig
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import ApplicationMessage, Session
from amqtt.utils import gen_client_id

from fieldline.broker.amqtt_outbox import MAX_PACKET_ID, Outbox

logger = logging.getLogger(__name__)

# What a reconnecting client brings to the persistent session it resumes (as amqtt does).
_RESUMED_SESSION_FIELDS = (
    "will_flag",
    "will_message",
    "will_topic",
    "will_qos",
    "keep_alive",
    "username",
    "password",
)


class TopicRules(Protocol):
    def allowed(self, username: str | None, topic: str, action: Action) -> bool: ...


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

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Session]:
        """Read the CONNECT, authenticate it, and only then find or replace its session."""
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        except MQTTError:
            await writer.close()  # amqtt has answered the malformed CONNECT
            raise
        if not await self._authenticate(session, None):
            with contextlib.suppress(OSError):  # the client may be gone already
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
                await writer.close()
            close_socket(writer)
            raise MQTTError(f"client {session.client_id!r} refused: not authorized")
        if session.clean_session:
            if session.client_id:
                await self._take_over(session.client_id)
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            resumed, _ = self._sessions[session.client_id]
            for name in _RESUMED_SESSION_FIELDS:
                setattr(resumed, name, getattr(session, name))
            session = resumed
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _take_over(self, client_id: str) -> None:
        """Disconnect the client connected under `client_id`, as amqtt does on a persistent
        session's take-over; it notices, where a session deleted under it goes unnoticed."""
        session, handler = self._sessions.get(client_id, (None, None))
        if session is not None and handler is not None and session.transitions.is_connected():
            logger.warning("session taken over", extra={"client_id": client_id})
            await handler.handle_connection_closed()
            await handler.stop()

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
        close_socket(handler.writer)
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


def close_socket(writer: Any) -> None:
    """Close a connection's socket (amqtt's writer adapter) at once.

    amqtt's own close drains first, and a drain on a connection its client has already
    closed raises before the socket is closed: the socket stayed open until collected.
    """
    transport = getattr(getattr(writer, "_writer", None), "transport", None)
    if transport is not None:
        transport.abort()


def _done(value: Any) -> asyncio.Future[Any]:
    """A future already holding `value`: amqtt's handlers take their input that way."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future
