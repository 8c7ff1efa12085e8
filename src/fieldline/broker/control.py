"""The dynamic-security command channel: one admin MQTT connection.

Commands go to `$CONTROL/dynamic-security/v1`; Mosquitto answers every command
of a message in one `{"responses": [...]}` on the response topic, echoing each
command's `correlationData`, which is how answers find their waiting caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gmqtt import Client as MqttClient
from gmqtt.mqtt.constants import MQTTv311

from fieldline.broker.base import BrokerEndpoint, BrokerError
from fieldline.broker.dynsec import CONTROL_TOPIC, RESPONSE_TOPIC, JsonObject
from fieldline.domain.devices import RESERVED_CLIENT_ID_PREFIX
from fieldline.ops.sockets import accepts_connections

logger = logging.getLogger(__name__)

# Listing every client and role: Mosquitto answers slowly for large fleets (the roles
# of 50,000 devices took 42 s on a 2-core machine).
LIST_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class CommandResult:
    command: str
    error: str | None
    data: JsonObject


def admin_client_id() -> str:
    """A new one per connection (so admin channels never drop each other), reserved to
    fieldline: no device id starts with the prefix."""
    return f"{RESERVED_CLIENT_ID_PREFIX}admin-{uuid.uuid4().hex[:12]}"


class DynsecControl:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._timeout = timeout
        self._pending: dict[str, asyncio.Future[CommandResult]] = {}
        self._subscribed = asyncio.Event()
        self._client = MqttClient(admin_client_id())
        self._client.set_auth_credentials(username, password)
        self._client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    @classmethod
    def at(
        cls, endpoint: BrokerEndpoint, *, username: str, password: str, timeout: float = 10.0
    ) -> DynsecControl:
        """The admin channel as fieldline's own clients reach `endpoint` (with TLS or not)."""
        host, port, tls = endpoint.client_target()
        return cls(
            host=host, port=port, username=username, password=password, timeout=timeout, tls=tls
        )

    @property
    def connected(self) -> bool:
        return bool(self._client.is_connected)

    async def connect(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.connect(
                    self._host, self._port, ssl=self._tls or False, version=MQTTv311
                )
                await self._subscribed.wait()
        except ssl.SSLError as exc:
            raise BrokerError(
                f"TLS with the broker's admin API failed (does the CA certificate fieldline "
                f"uses belong to the broker's certificate?): {exc!r}"
            ) from exc
        except (OSError, TimeoutError) as exc:
            raise BrokerError(f"cannot reach the broker's admin API: {exc!r}") from exc
        except Exception as exc:  # gmqtt raises its own MQTTConnectError
            raise BrokerError(f"broker refused the admin account: {exc!r}") from exc

    async def reachable(self, within: float = 1.0) -> bool:
        """A new connection to the broker succeeds (with TLS: the whole handshake)."""
        if self._tls is None:
            return await accepts_connections(self._host, self._port, within=within)
        return await accepts_tls(self._host, self._port, self._tls, within=within)

    async def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._client.is_connected:
            await self._client.disconnect()

    async def execute(
        self,
        commands: Sequence[Mapping[str, Any]],
        *,
        tolerate: Collection[str] = (),
        answer_within: float | None = None,
    ) -> list[CommandResult]:
        """Run commands in order; raise BrokerError unless every one succeeded.

        `tolerate` lists error texts that mean "already so" for idempotent
        callers (e.g. "Client not found" when deleting). `answer_within` (seconds)
        overrides the channel's timeout for slow commands (listing tens of thousands of clients).
        """
        if not commands:
            return []
        if not self._client.is_connected:
            raise BrokerError("the broker's admin connection is down")
        loop = asyncio.get_running_loop()
        tagged: list[JsonObject] = []
        futures: list[asyncio.Future[CommandResult]] = []
        for command in commands:
            correlation = uuid.uuid4().hex
            tagged.append({**command, "correlationData": correlation})
            future: asyncio.Future[CommandResult] = loop.create_future()
            self._pending[correlation] = future
            futures.append(future)
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}).encode(), qos=1)
        try:
            async with asyncio.timeout(answer_within or self._timeout):
                results = list(await asyncio.gather(*futures))
        except TimeoutError as exc:
            names = ", ".join(str(command["command"]) for command in commands)
            raise BrokerError(f"no answer from the broker to {names}") from exc
        finally:
            for command in tagged:
                self._pending.pop(command["correlationData"], None)
        for result in results:
            if result.error is not None and result.error not in tolerate:
                raise BrokerError(f"broker refused {result.command}: {result.error}")
        return results

    def _on_connect(self, client: Any, flags: int, rc: int, properties: Any) -> None:
        # Also runs after every automatic reconnect: the subscription must follow.
        self._subscribed.clear()
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        self._subscribed.set()

    def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        try:
            responses = json.loads(payload)["responses"]
        except (ValueError, KeyError, TypeError):
            logger.warning("malformed dynamic-security response", extra={"topic": topic})
            return 0
        for response in responses if isinstance(responses, list) else []:
            if not isinstance(response, dict):
                continue
            future = self._pending.get(str(response.get("correlationData")))
            if future is None or future.done():
                continue
            error = response.get("error")
            data = response.get("data")
            future.set_result(
                CommandResult(
                    command=str(response.get("command")),
                    error=str(error) if error is not None else None,
                    data=data if isinstance(data, dict) else {},
                )
            )
        return 0


async def accepts_tls(host: str, port: int, tls: ssl.SSLContext, within: float = 1.0) -> bool:
    """A TLS handshake with `host:port` completes.

    The connection ends with a TLS close_notify: Mosquitto logs an error for
    every TLS connection closed without one, so a bare TCP probe of a TLS
    listener would fill its log.
    """
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(host, port, ssl=tls)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(within):
            await writer.wait_closed()
    return True
