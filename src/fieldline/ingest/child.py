"""`fieldline up`'s ingest as a process of its own, beside the in-process amqtt broker.

amqtt and ingest are both pure Python and each takes most of a core at a few
thousand messages a second; in one process they shared one core. The child is
`fieldline ingest` with `up`'s settings, reaching the broker on loopback as its
service account under ingest's usual persistent session. `up` restarts it when
it dies (what it had not acknowledged is sent again by the broker, and the
ledger drops what was already stored), stops it with SIGTERM so it drains as any
ingest process does, and adds its metrics to its own /metrics.
"""

from __future__ import annotations

import asyncio
import os
import sys
import typing
from collections.abc import Awaitable, Callable

import httpx
from pydantic import SecretStr

from fieldline.broker.base import BrokerEndpoint, ServiceAccount
from fieldline.config import BrokerKind, Settings, environment
from fieldline.ops.metrics import Metrics
from fieldline.ops.process import SupervisedProcess
from fieldline.ops.sockets import free_port

LOOPBACK = "127.0.0.1"
# Ingest writes what it holds before it exits, for at most 10 s (INGEST_DRAIN_SECONDS
# of runtime/ingest_runner.py); past this it is killed. Either way the database's absence
# loses the wait, not messages (unacknowledged ones stay at the broker).
STOP_TIMEOUT_SECONDS = 15.0
SCRAPE_TIMEOUT_SECONDS = 2.0


# The secrets ingest uses: the broker account it subscribes with. Every other setting
# typed SecretStr (today's and any added later) stays with `up`.
CHILD_SECRETS = frozenset({"broker_service_password"})


def _secret_fields() -> frozenset[str]:
    return frozenset(
        name
        for name, field in Settings.model_fields.items()
        if field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)
    )


def child_settings(
    settings: Settings, *, url: str, endpoint: BrokerEndpoint, service: ServiceAccount
) -> Settings:
    """`up`'s settings as the ingest child needs them: its database, broker and account."""
    host, _, _ = endpoint.client_target()
    withheld = dict.fromkeys(_secret_fields() - CHILD_SECRETS)
    return settings.model_copy(
        update={
            **withheld,
            "broker": BrokerKind.EXTERNAL,
            "database_url": url,
            "mqtt_host": host,
            "mqtt_port": endpoint.port,
            "mqtt_tls_port": endpoint.tls_port,
            "mqtt_tls_ca_file": endpoint.ca_file,
            "broker_tls": endpoint.ca_file is not None,
            "broker_mqtt5": endpoint.mqtt5,
            "broker_service_username": service.username,
            "broker_service_password": SecretStr(service.password),
            # It administers nothing: the admin's name goes with the password.
            "broker_admin_username": None,
            # /metrics for `up` to add to its own, on loopback only.
            "http_host": LOOPBACK,
            "ops_port": free_port(LOOPBACK),
        }
    )


class IngestChild:
    """`fieldline ingest` as a supervised child process of `fieldline up`."""

    def __init__(
        self,
        *,
        settings: Settings,
        url: str,
        endpoint: BrokerEndpoint,
        service: ServiceAccount,
        metrics: Metrics,
        before_stop: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._before_stop = before_stop
        child = child_settings(settings, url=url, endpoint=endpoint, service=service)
        self._metrics_url = f"http://{LOOPBACK}:{child.ops_port}/metrics"
        # The child's settings are exactly these: none inherited, no TOML file read again.
        inherited = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("FIELDLINE_") and key != "DATABASE_URL"
        }
        self._process = SupervisedProcess(
            [sys.executable, "-m", "fieldline", "ingest", "--supervised"],
            name="ingest",
            env={**inherited, **environment(child)},
            stop_timeout=STOP_TIMEOUT_SECONDS,
            relay_output=False,  # it logs as `up` does, to the same output
            lifeline=True,
        )
        metrics.sources.append(self.scrape)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def run(self, stopping: asyncio.Event) -> None:
        """Keep the child running until `stopping`; return once it has drained and exited.

        `before_stop` runs first, while the child still runs: the broker hands it the
        rest of what devices published.
        """
        await self._process.start()
        try:
            await stopping.wait()
            if self._before_stop is not None:
                await self._before_stop()
        finally:
            await self._process.stop()

    async def scrape(self) -> str | None:
        """The child's /metrics; None while it is restarting."""
        try:
            async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_SECONDS) as http:
                answer = await http.get(self._metrics_url)
        except httpx.HTTPError:
            return None
        return answer.text if answer.status_code == 200 else None
