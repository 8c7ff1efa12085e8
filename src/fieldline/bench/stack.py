"""The system under test, as an operator deploys it (docs/deploy.md), in one directory.

PostgreSQL (the embedded server, or any `initdb`/`pg_ctl` directory such as
Debian's `/usr/lib/postgresql/15/bin`), a Mosquitto with dynamic security and
persistence, `fieldline api` and, when a scenario asks, `fieldline ingest` and
`fieldline worker`, each its own process. The stack also creates a broker
account, `bench-reader`, allowed to subscribe to every device's telemetry: the
bare subscriber and the Node-RED peer use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fieldline.bench.deployment import Deployment, MosquittoServer
from fieldline.bench.usage import Usage, pids, tree
from fieldline.broker.base import BrokerEndpoint
from fieldline.broker.control import DynsecControl
from fieldline.ops.sockets import free_port
from fieldline.security.passwords import generate_secret
from fieldline.storage.pgserver import LocalPostgres

READER = "bench-reader"
# Durable as in production (fsync and synchronous commit stay on); commit timestamps
# let the latency scenario read when each row became visible.
POSTGRES_SETTINGS = {
    "track_commit_timestamp": "on",
    "shared_buffers": "512MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "max_connections": "200",
}


@dataclass
class Stack:
    directory: Path
    postgres: LocalPostgres
    broker: MosquittoServer
    deployment: Deployment
    reader_password: str
    usage: Usage = field(default_factory=Usage)

    @property
    def database_url(self) -> str:
        return self.deployment.database_url

    @property
    def mqtt_port(self) -> int:
        return self.broker.port

    @property
    def postgres_pid(self) -> int:
        """The postmaster's pid (watch it with `usage.tree` for every backend)."""
        return _postmaster_pid(self.postgres)

    async def start_ingest(self, instance: str = "a", **env: str) -> None:
        component = await self.deployment.start_ingest(instance, **env)
        assert component.process is not None
        self.usage.watch(f"fieldline ingest {instance}", pids(component.process.pid))

    async def start_worker(self) -> None:
        component = await self.deployment.start_worker()
        assert component.process is not None
        self.usage.watch("fieldline worker", pids(component.process.pid))

    async def stop_component(self, name: str) -> None:
        component = self.deployment.components.get(name)
        if component is not None:
            await asyncio.to_thread(component.stop)


@contextlib.asynccontextmanager
async def running_stack(
    directory: Path,
    *,
    postgres_bin: Path | None = None,
    extra_env: dict[str, str] | None = None,
    api: bool = True,
    mqtt_listeners: int = 1,
    before_broker: Callable[[Stack], Awaitable[None]] | None = None,
) -> AsyncIterator[Stack]:
    """Start PostgreSQL, Mosquitto and (unless `api=False`) `fieldline api`; stop all after.

    `before_broker` runs once PostgreSQL is up and Mosquitto's dynamic-security file
    exists, before Mosquitto starts: a scenario can seed devices there in bulk.
    """
    directory.mkdir(parents=True, exist_ok=True)
    postgres = LocalPostgres(directory / "postgres", settings=dict(POSTGRES_SETTINGS))
    if postgres_bin is not None:
        postgres.bin_dir = postgres_bin
    database_url = await asyncio.to_thread(postgres.start)
    broker = MosquittoServer(
        directory / "mosquitto",
        extra_ports=[free_port("127.0.0.1") for _ in range(mqtt_listeners - 1)],
    )
    deployment = Deployment(
        directory=directory,
        database_url=database_url,
        broker=broker,
        extra_env={"FIELDLINE_LOG_LEVEL": os.environ.get("FIELDLINE_LOG_LEVEL", "WARNING")}
        | (extra_env or {}),
    )
    stack = Stack(directory, postgres, broker, deployment, reader_password=generate_secret())
    try:
        if before_broker is not None:
            await before_broker(stack)
        await broker.start()
        assert broker.process is not None
        await _create_reader(broker, stack.reader_password)
        stack.usage.watch("mosquitto", pids(broker.process.pid))
        stack.usage.watch("postgresql", tree(_postmaster_pid(postgres)))
        if api:
            component = await deployment.start_api()
            assert component.process is not None
            stack.usage.watch("fieldline api", pids(component.process.pid))
        yield stack
    finally:
        # Each part is stopped even when stopping another failed.
        try:
            await asyncio.to_thread(deployment.stop_all)
        finally:
            try:
                await asyncio.to_thread(broker.stop)
            finally:
                await asyncio.to_thread(postgres.stop)


def _postmaster_pid(postgres: LocalPostgres) -> int:
    return int((postgres.data_dir / "postmaster.pid").read_text().splitlines()[0])


async def _create_reader(broker: MosquittoServer, password: str) -> None:
    control = DynsecControl.at(
        BrokerEndpoint(host="127.0.0.1", port=broker.port),
        username=broker.admin_username,
        password=broker.admin_password,
    )
    await control.connect()
    try:
        await control.execute(
            [
                {"command": "createRole", "rolename": READER},
                {
                    "command": "addRoleACL",
                    "rolename": READER,
                    "acltype": "subscribePattern",
                    "topic": "devices/+/telemetry",
                    "allow": True,
                },
                {
                    "command": "addRoleACL",
                    "rolename": READER,
                    "acltype": "subscribePattern",
                    "topic": "$share/#",
                    "allow": True,
                },
                {"command": "createClient", "username": READER, "password": password},
                {"command": "addClientRole", "username": READER, "rolename": READER},
            ]
        )
    finally:
        await control.close()
