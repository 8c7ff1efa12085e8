"""The in-process amqtt broker: the zero-install default for small fleets.

Authentication and topic rules come from an in-memory mirror of the registry
that an amqtt plugin (CONNECT) and the broker itself (`amqtt_server.py`: PUBLISH,
SUBSCRIBE, delivery) consult, so a change applied here takes effect on the very
next one, and live sessions of a revoked device are closed by the adapter. A
device connects with its own id as client id, or not at all; fieldline's own
client ids are the service account's alone.

amqtt 0.12.1 speaks MQTT 3.1.1 only and has no shared subscriptions; the
service account may subscribe to the plain ingest filters only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action, BrokerConfig, ListenerConfig
from amqtt.plugins.base import BaseAuthPlugin

from fieldline.broker.amqtt_server import AmqttServer, close_socket
from fieldline.broker.base import (
    BrokerEndpoint,
    BrokerError,
    Drift,
    ServiceAccount,
    refuse_reserved,
)
from fieldline.domain.devices import DeviceAccess, is_reserved_client_id
from fieldline.domain.topics import Downlink, TopicScheme
from fieldline.ops.sockets import free_port
from fieldline.security.passwords import InvalidHashError, SecretHash, generate_secret

logger = logging.getLogger(__name__)

SERVICE_USERNAME = "_fieldline-service"
DROP_TIMEOUT = 2.0
# Unacknowledged QoS 1 messages sent to a persistent session at once (ingest's).
DEFAULT_MAX_INFLIGHT = 20_000


class AccessRules:
    """Who may connect and which topics they may use; the plugins' shared state."""

    def __init__(self, topics: TopicScheme, service: ServiceAccount) -> None:
        self._topics = topics
        self._service = service
        self._devices: dict[str, DeviceAccess] = {}
        # device -> (secret hash, sha256 of the password that matched it)
        self._verified: dict[str, tuple[str, bytes]] = {}
        self._downlink_kinds = frozenset(kind.value for kind in Downlink)
        self.refusing_devices = False  # set while `fieldline up` stops
        self._service_filters = frozenset(topics.ingest_filters())

    def replace(self, devices: Sequence[DeviceAccess]) -> None:
        self._devices = {device.device_id: device for device in devices}
        self._verified.clear()

    def put(self, device: DeviceAccess) -> DeviceAccess | None:
        previous = self._devices.get(device.device_id)
        self._devices[device.device_id] = device
        if previous is not None and previous.secret_hash != device.secret_hash:
            self._verified.pop(device.device_id, None)
        return previous

    def pop(self, device_id: str) -> DeviceAccess | None:
        self._verified.pop(device_id, None)
        return self._devices.pop(device_id, None)

    async def refusal(
        self, username: str | None, password: str | None, client_id: str | None
    ) -> str | None:
        """Why a CONNECT with these credentials and client id is refused; None: accepted."""
        if not username or password is None:
            return "no username or password"
        if username == self._service.username:
            if hmac.compare_digest(password.encode(), self._service.password.encode()):
                return None
            return "bad password"
        if self.refusing_devices:
            return "fieldline is stopping"
        if client_id != username or is_reserved_client_id(username):
            return "a device's client id must be its device id"
        device = self._devices.get(username)
        if device is None or not device.enabled:
            return "unknown or disabled device"
        presented = hashlib.sha256(password.encode()).digest()
        cached = self._verified.get(username)
        if cached is not None and cached[0] == device.secret_hash:
            return None if hmac.compare_digest(cached[1], presented) else "bad password"
        try:
            secret = SecretHash.decode(device.secret_hash)
        except InvalidHashError:
            return "unusable secret hash"
        # PBKDF2 is deliberately slow; keep it off the event loop.
        if not await asyncio.to_thread(secret.verify, password):
            return "bad password"
        current = self._devices.get(username)
        if current is None or current.secret_hash != device.secret_hash or not current.enabled:
            return "device changed while verifying"
        self._verified[username] = (device.secret_hash, presented)
        return None

    def allowed(self, username: str | None, topic: str, action: Action) -> bool:
        if username is None:
            return False
        if username == self._service.username:
            if action == Action.SUBSCRIBE:
                return topic in self._service_filters
            if action == Action.RECEIVE:
                return self._topics.parse_uplink(topic) is not None
            return self._is_downlink(topic)
        device = self._devices.get(username)
        if device is None or not device.enabled:
            return False
        if action == Action.PUBLISH:
            return topic in self._topics.device_publishes(username)
        return topic in self._topics.device_subscribes(username)

    def _is_downlink(self, topic: str) -> bool:
        head = self._topics.prefix + "/"
        if not topic.startswith(head):
            return False
        device_id, sep, kind = topic[len(head) :].partition("/")
        return bool(sep and device_id) and "+" not in device_id and kind in self._downlink_kinds


class RegistryAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    @dataclass
    class Config:
        rules: Any = None

    async def authenticate(self, *, session: Any) -> bool:
        rules: AccessRules = self.config.rules
        reason = await rules.refusal(session.username, session.password, session.client_id)
        if reason is not None:
            logger.info(
                "mqtt connection refused",
                extra={
                    "username": session.username,
                    "client_id": session.client_id,
                    "reason": reason,
                },
            )
        return reason is None


class AmqttBroker:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        topics: TopicScheme,
        service: ServiceAccount | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
    ) -> None:
        self._host = host
        self._port = port
        self._topics = topics
        self._service = service or ServiceAccount(
            username=SERVICE_USERNAME, password=generate_secret()
        )
        self._rules = AccessRules(topics, self._service)
        self._max_inflight = max_inflight
        self._server: AmqttServer | None = None
        self._lock = asyncio.Lock()

    @property
    def endpoint(self) -> BrokerEndpoint:
        return BrokerEndpoint(host=self._host, port=self._port, mqtt5=False)

    @property
    def service(self) -> ServiceAccount:
        return self._service

    async def start(self, devices: Sequence[DeviceAccess]) -> Drift:
        self._rules.replace(devices)
        if self._port == 0:
            self._port = free_port(self._host)
        config = BrokerConfig(
            listeners={"default": ListenerConfig(bind=f"{self._host}:{self._port}")},
            plugins={f"{__name__}.RegistryAuthPlugin": {"rules": self._rules}},
        )
        server = AmqttServer(config, rules=self._rules, max_inflight=self._max_inflight)
        try:
            await server.start()
        except Exception as exc:
            raise BrokerError(f"amqtt did not start on port {self._port}: {exc}") from exc
        self._server = server
        logger.info(
            "embedded amqtt broker started", extra={"port": self._port, "devices": len(devices)}
        )
        # Nothing persists between runs: the mirror is rebuilt from the registry each start.
        return Drift()

    async def keep_ingest_session(self, client_id: str) -> None:
        """Queue every uplink for ingest's session `client_id` from now on, before ingest
        (a process of its own) first connects."""
        if self._server is None:
            raise BrokerError("the amqtt broker is not running")
        await self._server.keep_session(
            client_id, username=self._service.username, filters=self._topics.ingest_filters()
        )

    async def drain_ingest(self, client_id: str, within: float) -> int:
        """Before ingest stops: refuse devices and end their sessions, then wait until
        ingest's session `client_id` has acknowledged (stored) all the broker accepted.

        amqtt keeps what it holds in memory only; without this, what devices published
        while `fieldline up` stopped was acknowledged to them and then lost. Answers how
        many messages were still undelivered after `within` seconds.
        """
        server = self._server
        if server is None:
            return 0
        self._rules.refusing_devices = True
        devices = [
            (session, handler)
            for session, handler in list(server.sessions.values())
            if session.username != self._service.username and session.transitions.is_connected()
        ]
        for _, handler in devices:
            # Cancelling amqtt's reader is not enough on Python 3.11: its `wait_for` can
            # swallow the cancellation while packets keep arriving, and the reader then
            # goes on acknowledging publishes after its session stopped routing them
            # (seen under load: thousands acknowledged and lost). Closed, it stops.
            close_socket(handler.writer)
            await handler.handle_connection_closed()
        deadline = time.monotonic() + within
        # Done once every device session has ended and routed what it was acknowledged
        # for, and ingest has acknowledged (stored) all of it.
        while any(
            s.transitions.is_connected() or not s.delivered_message_queue.empty()
            for s, _ in devices
        ) or server.undelivered(client_id):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        left = server.undelivered(client_id)
        if left:
            logger.warning(
                "ingest stopped before it had everything the broker accepted",
                extra={"messages": left, "waited_s": within},
            )
        else:
            logger.info("devices disconnected; ingest has everything the broker accepted")
        return left

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def apply(self, device: DeviceAccess, *, password: str | None = None) -> None:
        refuse_reserved(device.device_id)
        async with self._lock:
            previous = self._rules.put(device)
            revoked = previous is not None and (
                previous.secret_hash != device.secret_hash
                or (previous.enabled and not device.enabled)
            )
            if revoked:
                await self._drop_sessions(device.device_id)
        logger.info(
            "device applied to broker",
            extra={"device_id": device.device_id, "enabled": device.enabled},
        )

    async def remove(self, device_id: str) -> None:
        async with self._lock:
            self._rules.pop(device_id)
            await self._drop_sessions(device_id)
        logger.info("device removed from broker", extra={"device_id": device_id})

    async def healthy(self) -> bool:
        # State rather than a probe connection: amqtt leaves a connection that never
        # sent CONNECT open at shutdown.
        return self._server is not None and self._server.transitions.state == "started"

    async def _drop_sessions(self, username: str) -> None:
        if self._server is None:
            return
        dropped = []
        for session, handler in list(self._server.sessions.values()):
            if session.username == username and session.transitions.is_connected():
                # What amqtt itself does on a session take-over: ends the message
                # loop, which closes the socket (and publishes the will).
                await handler.handle_connection_closed()
                dropped.append(session)
        deadline = time.monotonic() + DROP_TIMEOUT
        while any(s.transitions.is_connected() for s in dropped):
            if time.monotonic() > deadline:
                # amqtt 0.12 leaves the session of a refused CONNECT marked connected
                # with no socket behind it; forget such sessions instead of failing.
                for stale in [s for s in dropped if s.transitions.is_connected()]:
                    self._server.sessions.pop(stale.client_id, None)
                    logger.warning(
                        "stale session forgotten",
                        extra={"device_id": username, "client_id": stale.client_id},
                    )
                break
            await asyncio.sleep(0.01)
        if dropped:
            logger.info(
                "device sessions dropped", extra={"device_id": username, "sessions": len(dropped)}
            )
