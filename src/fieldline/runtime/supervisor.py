"""`fieldline up`: its database and broker, then every component in one process.

Beside the in-process amqtt, ingest is a child process that a task of the group
supervises (ingest/child.py); with Mosquitto it runs in this process.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass

from fieldline.api.context import ApiContext
from fieldline.broker.base import Broker
from fieldline.broker.embedded import AmqttBroker
from fieldline.broker.publisher import Publisher
from fieldline.config import Settings
from fieldline.ingest.child import IngestChild
from fieldline.ops.datadir import private_directory
from fieldline.ops.heartbeat import Heartbeat
from fieldline.ops.metrics import Metrics
from fieldline.ops.secrets import stored_secret
from fieldline.runtime.admin import ensure_admin
from fieldline.runtime.http import api_server, local_url
from fieldline.runtime.ingest_runner import INGEST_CLIENT_PREFIX, IngestRunner
from fieldline.runtime.lifecycle import (
    CLIENT_CLOSE_SECONDS,
    STOP_GRACE_SECONDS,
    WORKER_GRACE_SECONDS,
    close_within,
    install_signal_handlers,
    start_broker,
    stop_within,
)
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.embedded import Database, own_data_dir, served_database
from fieldline.storage.migrate import migrate
from fieldline.storage.reporting import ensure_reader
from fieldline.worker.service import Worker

# amqtt's hand-over to the ingest child and the child's own drain fit in the grace period.
UP_DRAIN_SECONDS = 12.0  # at most, for amqtt to hand ingest what it holds when `up` stops


@dataclass(frozen=True, slots=True)
class StartupInfo:
    api_url: str
    mqtt_host: str
    mqtt_port: int
    mqtt_tls_port: int | None
    broker: str
    database: str
    admin_password: str | None  # set only when generated now, to be shown once


async def run_platform(
    settings: Settings,
    *,
    on_ready: Callable[[StartupInfo], None],
    stopping: asyncio.Event | None = None,
) -> None:
    """`fieldline up`: database and broker (embedded or external) and every component.

    Refused while another `up` runs on the same data directory.
    """
    stopping = stopping or asyncio.Event()
    install_signal_handlers(stopping)
    data_dir = settings.data_dir.resolve()
    lock = await own_data_dir(data_dir)
    try:
        private_directory(data_dir)
        async with served_database(settings) as db:
            if stopping.is_set():  # asked while the database started
                return
            await stop_within(
                stopping,
                _run_platform(settings, db, on_ready, stopping),
                "fieldline up",
                STOP_GRACE_SECONDS,
            )
    finally:
        lock.release()


async def _run_platform(
    settings: Settings,
    db: Database,
    on_ready: Callable[[StartupInfo], None],
    stopping: asyncio.Event,
) -> None:
    await migrate(db.url)
    pool = await open_pool(db.url, min_size=2, max_size=10)
    try:
        if not settings.database_url:
            # The embedded server's read-only role for Grafana and psql (docs/data.md).
            reader_password = stored_secret(settings.data_dir, "database_reader_password")
            async with pool.connection() as conn:
                await ensure_reader(conn, reader_password)
        admin_password = await ensure_admin(pool, settings)
        broker = await start_broker(settings, pool)
        try:
            await _serve_all(
                settings, pool, broker, db.url, db.label, admin_password, on_ready, stopping
            )
        finally:
            await broker.stop()
    finally:
        await pool.close(timeout=CLIENT_CLOSE_SECONDS)


async def _serve_all(
    settings: Settings,
    pool: Pool,
    broker: Broker,
    url: str,
    database_label: str,
    admin_password: str | None,
    on_ready: Callable[[StartupInfo], None],
    stopping: asyncio.Event,
) -> None:
    metrics = Metrics()
    publisher = Publisher(broker.endpoint, broker.service, role="up")
    await publisher.start()
    context = ApiContext.build(
        settings, pool=pool, broker=broker, metrics=metrics, publisher=publisher
    )
    ingest = await _up_ingest(settings, url, broker, metrics)
    worker = Worker(settings=settings, pool=pool, metrics=metrics, publisher=publisher)
    http = api_server(context)
    beat = Heartbeat(
        url=url,
        interval=settings.heartbeat_seconds,
        role="up",
        name="up",
        # beside amqtt, ingest is a child process with a heartbeat of its own
        parts=["api", "worker"] + (["ingest"] if isinstance(ingest, IngestRunner) else []),
        metrics=metrics,
        pool=pool,
        extra=worker.report,
    )

    async def announce() -> None:
        await http.wait_started()
        context.broker_started.set()
        on_ready(
            StartupInfo(
                api_url=settings.public_url or local_url(settings.http_host, http.port),
                mqtt_host=settings.advertised_mqtt_host,
                mqtt_port=broker.endpoint.port,
                mqtt_tls_port=broker.endpoint.tls_port,
                broker=type(broker).__name__,
                database=database_label,
                admin_password=admin_password,
            )
        )

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(ingest.run(stopping), name="ingest")
            group.create_task(
                stop_within(stopping, worker.run(stopping), "worker", WORKER_GRACE_SECONDS),
                name="worker",
            )
            group.create_task(http.serve(stopping), name="http-api")
            group.create_task(announce(), name="announce")
            group.create_task(beat.run(stopping), name="heartbeat")
    finally:
        await close_within(publisher.stop())


async def _up_ingest(
    settings: Settings, url: str, broker: Broker, metrics: Metrics
) -> IngestRunner | IngestChild:
    """`up`'s ingest: beside the in-process amqtt a child process, else in this process.

    amqtt and ingest each need most of a core (docs/benchmarks.md, section 7). The
    child's session exists from the broker's start, so what devices publish before
    it first connects waits for it, as it does while the child restarts. When `up`
    stops, devices are disconnected first and the child stops once it has stored all
    amqtt accepted (amqtt holds it in memory only).
    """
    endpoint, service = broker.endpoint, broker.service
    if isinstance(broker, AmqttBroker):
        client_id = INGEST_CLIENT_PREFIX + settings.ingest_instance
        await broker.keep_ingest_session(client_id)
        drain = functools.partial(broker.drain_ingest, client_id, UP_DRAIN_SECONDS)
        return IngestChild(
            settings=settings,
            url=url,
            endpoint=endpoint,
            service=service,
            metrics=metrics,
            before_stop=drain,
        )
    return IngestRunner(
        settings=settings, url=url, endpoint=endpoint, service=service, metrics=metrics
    )
