"""`fieldline api`, `fieldline ingest` and `fieldline worker`: one component a process.

Each runs against an external PostgreSQL (and, but for the worker, a broker it
does not start), waits for them when they are down at start, and serves
/health, /ready and /metrics: the API on its own port, ingest and the worker on
`ops_port` when it is set.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

import psycopg

from fieldline.api.context import ApiContext
from fieldline.broker.base import BrokerError
from fieldline.broker.factory import external_client
from fieldline.broker.publisher import Publisher
from fieldline.config import BrokerKind, Settings
from fieldline.ops.heartbeat import Heartbeat
from fieldline.ops.metrics import Metrics
from fieldline.ops.server import ReadyChecks, ops_app
from fieldline.runtime.admin import ensure_admin
from fieldline.runtime.http import HttpServer, api_server, local_url
from fieldline.runtime.ingest_runner import IngestRunner
from fieldline.runtime.lifecycle import (
    CLIENT_CLOSE_SECONDS,
    STOP_GRACE_SECONDS,
    WORKER_GRACE_SECONDS,
    close_within,
    install_signal_handlers,
    migrate_when_reachable,
    retrying,
    start_broker_when_reachable,
    stop_within,
)
from fieldline.runtime.requirements import check_component
from fieldline.runtime.watch import stand_in_for_the_worker
from fieldline.storage.db import open_pool
from fieldline.worker.service import Worker

log = logging.getLogger(__name__)


async def run_api(
    settings: Settings,
    *,
    on_ready: Callable[[str], None],
    stopping: asyncio.Event | None = None,
) -> None:
    """`fieldline api`: the HTTP API; it also keeps the broker's device list in step."""
    url = check_component(settings, "api")
    stopping = stopping or asyncio.Event()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    install_signal_handlers(stopping)
    if not await migrate_when_reachable(url, stopping):
        return
    pool = await open_pool(url, min_size=2, max_size=10, name="fieldline-api")
    try:
        admin_password = await ensure_admin(pool, settings)
        broker = await start_broker_when_reachable(settings, pool, stopping)
        if broker is None:
            return
        publisher = Publisher(broker.endpoint, broker.service, role="api")
        try:
            await publisher.start()
            context = ApiContext.build(
                settings, pool=pool, broker=broker, metrics=Metrics(), publisher=publisher
            )
            context.broker_started.set()
            http = api_server(context)

            async def announce() -> None:
                await http.wait_started()
                lines = [f"fieldline api listening on {local_url(settings.http_host, http.port)}"]
                if admin_password:
                    lines.append(f"admin password (shown only now): {admin_password}")
                on_ready("\n".join(lines))

            beat = Heartbeat(
                url=url,
                interval=settings.heartbeat_seconds,
                role="api",
                name="api",
                parts=["api"],
                metrics=context.metrics,
                pool=pool,
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(http.serve(stopping), name="http-api")
                group.create_task(announce(), name="announce")
                group.create_task(beat.run(stopping), name="heartbeat")
                group.create_task(
                    stand_in_for_the_worker(settings, pool, context.metrics, stopping),
                    name="worker-stand-in",
                )
        finally:
            await close_within(publisher.stop())
            await broker.stop()
    finally:
        await pool.close(timeout=CLIENT_CLOSE_SECONDS)


async def _database_reachable(url: str) -> bool:
    try:
        async with asyncio.timeout(2):  # a frozen server must not hang the probe
            async with await psycopg.AsyncConnection.connect(url, connect_timeout=2) as conn:
                await conn.execute("SELECT 1")
    except (psycopg.Error, TimeoutError):
        return False
    return True


async def _with_ops_server(
    settings: Settings,
    metrics: Metrics,
    checks: ReadyChecks,
    main: Callable[[], Awaitable[None]],
) -> None:
    """Run `main()`; with `ops_port` set, serve /health, /ready and /metrics beside it."""
    if settings.ops_port is None:
        await main()
        return
    http = HttpServer(
        ops_app(metrics=metrics, checks=checks), settings.http_host, settings.ops_port
    )
    http_stopping = asyncio.Event()

    async def run_main() -> None:
        try:
            await main()
        finally:
            http_stopping.set()  # the ops endpoints answer until main() has drained

    async with asyncio.TaskGroup() as group:
        group.create_task(run_main(), name="main")
        group.create_task(http.serve(http_stopping), name="ops-http")


async def run_ingest(
    settings: Settings,
    *,
    on_ready: Callable[[str], None],
    stopping: asyncio.Event | None = None,
    retire: bool = False,
    supervised: bool = False,
) -> None:
    """`fieldline ingest`: one member of the shared subscription, writing to PostgreSQL.

    `retire`: take this instance out of the group for good (see IngestRunner.run).
    `supervised`: `fieldline up` runs this process and holds its standard input;
    stop (draining as on SIGTERM) once that closes, when `up` is gone.
    """
    url = check_component(settings, "ingest")
    endpoint, service = external_client(settings)
    stopping = stopping or asyncio.Event()
    install_signal_handlers(stopping)
    if not await migrate_when_reachable(url, stopping):
        return
    metrics = Metrics()
    ingest = IngestRunner(
        settings=settings, url=url, endpoint=endpoint, service=service, metrics=metrics
    )

    async def checks() -> dict[str, bool]:
        return {
            "database": await _database_reachable(url),
            "broker": ingest.connected.is_set(),
            "ingest_writes": not ingest.batcher.stalled,
        }

    async def announce() -> None:
        await ingest.connected.wait()
        host, port, tls = endpoint.client_target()
        on_ready(
            f"fieldline ingest {settings.ingest_instance} connected to {host}:{port}"
            f"{' (TLS)' if tls else ''} as {ingest.client_id}, "
            + (
                "retiring: storing its queue, then ending its session"
                if retire
                else f"share group {settings.ingest_share_group or '(none)'}"
            )
        )

    beat = Heartbeat(
        url=url,
        interval=settings.heartbeat_seconds,
        role="ingest",
        name=f"ingest {settings.ingest_instance}",
        parts=["ingest"],
        metrics=metrics,
    )

    async def main() -> None:
        announcing = asyncio.create_task(announce(), name="announce")
        ended = asyncio.Event()  # ingest has drained (or retired): the last beat says so
        beating = asyncio.create_task(beat.run(ended), name="heartbeat")
        watching = (
            asyncio.create_task(_set_when_stdin_closes(stopping), name="stdin-watch")
            if supervised
            else None
        )
        try:
            await ingest.run(stopping, retire=retire)
        finally:
            ended.set()
            await beating
            announcing.cancel()
            if watching is not None:
                watching.cancel()
        if retire and not stopping.is_set():
            on_ready(f"fieldline ingest {settings.ingest_instance} retired")

    await stop_within(
        stopping,
        _with_ops_server(settings, metrics, checks, main),
        "fieldline ingest",
        STOP_GRACE_SECONDS,
    )


async def _set_when_stdin_closes(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while await reader.read(4096):
            pass  # nothing is ever written; only the end matters
    finally:
        transport.close()
    log.info("standard input closed: the supervising process is gone; stopping")
    stopping.set()


async def run_worker(
    settings: Settings,
    *,
    on_ready: Callable[[str], None],
    stopping: asyncio.Event | None = None,
) -> None:
    """`fieldline worker`: housekeeping jobs on an interval."""
    url = check_component(settings, "worker")
    stopping = stopping or asyncio.Event()
    install_signal_handlers(stopping)
    if not await migrate_when_reachable(url, stopping):
        return
    metrics = Metrics()
    publisher = await _worker_publisher(settings, stopping)
    # A connection per schedule (housekeeping, downlinks, alerts, notifications), so that
    # no schedule's round waits for another's connection.
    pool = await open_pool(url, min_size=1, max_size=5, name="fieldline-worker")
    try:
        worker = Worker(settings=settings, pool=pool, metrics=metrics, publisher=publisher)

        async def checks() -> dict[str, bool]:
            return {"database": await _database_reachable(url)}

        beat = Heartbeat(
            url=url,
            interval=settings.heartbeat_seconds,
            role="worker",
            name="worker",
            parts=["worker"],
            metrics=metrics,
            pool=pool,
            extra=worker.report,
        )

        async def main() -> None:
            on_ready(f"fieldline worker running every {settings.worker_interval_seconds:g} s")
            async with asyncio.TaskGroup() as group:
                group.create_task(worker.run(stopping), name="worker")
                group.create_task(beat.run(stopping), name="heartbeat")

        await stop_within(
            stopping,
            _with_ops_server(settings, metrics, checks, main),
            "fieldline worker",
            WORKER_GRACE_SECONDS,
        )
    finally:
        await pool.close(timeout=CLIENT_CLOSE_SECONDS)
        if publisher is not None:
            await close_within(publisher.stop())


async def _worker_publisher(settings: Settings, stopping: asyncio.Event) -> Publisher | None:
    """The worker delivers pending commands and configuration through the broker, if it has one."""
    if settings.broker != BrokerKind.EXTERNAL:
        log.warning(
            "worker without a broker (FIELDLINE_BROKER is not external): pending commands and "
            "configuration are not delivered by this worker"
        )
        return None
    endpoint, service = external_client(settings)
    publisher = Publisher(endpoint, service, role="worker")

    async def start() -> Publisher:
        await publisher.start()
        return publisher

    return await retrying(start, "broker not ready; retrying", (BrokerError, OSError), stopping)
