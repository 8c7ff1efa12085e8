"""fieldline's own MQTT client for downlinks (configuration, commands), as the service account.

`publish` returns once the broker has acknowledged the message (QoS 1 PUBACK),
so a caller that records "sent" records the truth. The client reconnects by
itself; gmqtt resends what was unacknowledged when it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage

from fieldline.broker.base import BrokerEndpoint, BrokerError, ServiceAccount
from fieldline.domain.devices import RESERVED_CLIENT_ID_PREFIX

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0
PUBLISH_TIMEOUT_SECONDS = 10.0


class PublishError(BrokerError):
    """The broker did not acknowledge a downlink (not connected, or no PUBACK in time)."""


class _Acknowledgements(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacknowledged publishes, resolving a future per PUBACK."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: asyncio.Future[None] | None = None  # for the publish in progress
        self._futures: dict[int, asyncio.Future[None]] = {}

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        if self.waiting is not None:
            self._futures[mid] = self.waiting
            self.waiting = None

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        future = self._futures.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def forget(self, future: asyncio.Future[None]) -> None:
        for mid, waiting in list(self._futures.items()):
            if waiting is future:
                del self._futures[mid]


def publisher_client_id(role: str) -> str:
    """Unique per process: two publishers under one client id would drop each other.
    Reserved to fieldline (no device id starts with the prefix)."""
    return f"{RESERVED_CLIENT_ID_PREFIX}{role}-{socket.gethostname()[:32]}-{os.getpid()}"


class Publisher:
    def __init__(self, endpoint: BrokerEndpoint, service: ServiceAccount, *, role: str) -> None:
        self._endpoint = endpoint
        self._acks = _Acknowledgements()
        self._client = gmqtt.Client(
            publisher_client_id(role), clean_session=True, persistent_storage=self._acks
        )
        self._client.set_auth_credentials(service.username, service.password)
        self._client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
        self._started = False

    @property
    def connected(self) -> bool:
        return self._started and bool(self._client.is_connected)

    async def start(self) -> None:
        host, port, tls = self._endpoint.client_target()
        version = MQTTv50 if self._endpoint.mqtt5 else MQTTv311
        try:
            await asyncio.wait_for(
                self._client.connect(host, port, ssl=tls or False, version=version),
                timeout=CONNECT_TIMEOUT_SECONDS,
            )
        except (OSError, TimeoutError, gmqtt.mqtt.handler.MQTTConnectError) as exc:
            with contextlib.suppress(Exception):
                await self._client.disconnect()
            raise BrokerError(f"cannot connect to the broker at {host}:{port}: {exc}") from exc
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            with contextlib.suppress(Exception):
                await self._client.disconnect()

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        **properties: Any,
    ) -> None:
        """Publish at QoS 1; return once the broker acknowledged it (or raise PublishError)."""
        if not self.connected:
            raise PublishError("not connected to the broker")
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.waiting = acknowledged
        try:
            self._client.publish(topic, payload, qos=1, retain=retain, **properties)
        finally:
            self._acks.waiting = None
        try:
            await asyncio.wait_for(asyncio.shield(acknowledged), timeout=PUBLISH_TIMEOUT_SECONDS)
        except TimeoutError as exc:
            self._acks.forget(acknowledged)
            raise PublishError(
                f"the broker did not acknowledge {topic} in {PUBLISH_TIMEOUT_SECONDS:g} s"
            ) from exc
