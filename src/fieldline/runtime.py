"""Running fieldline: the database, migrations, broker, ingest and HTTP API as one group.

`run_platform` is what `fieldline up` runs; each part is a named task in one
TaskGroup, so a failure of any part stops the whole group cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import uvicorn

from fieldline.api.app import create_app
from fieldline.api.context import ApiContext
from fieldline.broker.base import Broker
from fieldline.broker.factory import create_broker
from fieldline.config import Settings
from fieldline.domain.topics import TopicScheme
from fieldline.domain.users import Role
from fieldline.ingest.batcher import Batcher
from fieldline.ingest.service import IngestConsumer, consume, decode_limits
from fieldline.ingest.writer import BatchWriter
from fieldline.ops.metrics import Metrics
from fieldline.ops.secrets import stored_secret
from fieldline.security.passwords import USER_ITERATIONS, generate_secret, hash_secret
from fieldline.storage import devices as device_store
from fieldline.storage import users as user_store
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.migrate import migrate
from fieldline.storage.pgserver import LocalPostgres

log = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"


@dataclass(frozen=True, slots=True)
class StartupInfo:
    api_url: str
    mqtt_host: str
    mqtt_port: int
    broker: str
    database: str
    admin_password: str | None  # set only when generated now, to be shown once


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """The database URL (embedded server started when DATABASE_URL is unset) and a label."""
    if settings.database_url:
        yield settings.database_url, "external PostgreSQL"
        return
    server = LocalPostgres(settings.data_dir / "postgres")
    url = await asyncio.to_thread(server.start)
    try:
        yield url, f"embedded PostgreSQL in {server.data_dir}"
    finally:
        await asyncio.to_thread(server.stop)


async def ensure_admin(pool: Pool, settings: Settings) -> str | None:
    """Create `admin` on first start; answer its password if it was generated now."""
    async with pool.connection() as conn:
        if await user_store.count_admins(conn):
            return None
        given = settings.admin_password
        password = given.get_secret_value() if given else generate_secret(12)
        hashed = await asyncio.to_thread(hash_secret, password, iterations=USER_ITERATIONS)
        await user_store.create_user(
            conn, username=ADMIN_USERNAME, password_hash=hashed.encode(), role=Role.ADMIN
        )
        log.info("admin user created", extra={"username": ADMIN_USERNAME})
        return None if given else password


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


async def run_platform(
    settings: Settings,
    *,
    on_ready: Callable[[StartupInfo], None],
    stopping: asyncio.Event | None = None,
) -> None:
    stopping = stopping or asyncio.Event()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    async with database(settings) as (url, database_label):
        await migrate(url)
        pool = await open_pool(url, min_size=2, max_size=10)
        try:
            admin_password = await ensure_admin(pool, settings)
            broker = create_broker(settings)
            async with pool.connection() as conn:
                registry = await device_store.all_device_access(conn)
            await broker.start(registry)  # reconciles; the adapter logs any drift
            try:
                await _serve(
                    settings, pool, broker, url, database_label, admin_password, on_ready, stopping
                )
            finally:
                await broker.stop()
        finally:
            await pool.close()


async def _serve(
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
    secret_key = (
        settings.secret_key.get_secret_value()
        if settings.secret_key
        else stored_secret(settings.data_dir, "secret_key")
    )
    context = ApiContext(
        settings=settings, pool=pool, broker=broker, metrics=metrics, secret_key=secret_key
    )
    topics = TopicScheme(settings.topic_prefix)
    writer = BatchWriter(url)
    batcher = Batcher(
        write=writer,
        metrics=metrics,
        max_messages=settings.batch_max_messages,
        max_delay=settings.batch_max_delay_ms / 1000,
    )
    consumer = IngestConsumer(
        batcher=batcher,
        topics=topics,
        metrics=metrics,
        limits=decode_limits(settings.max_payload_bytes, settings.max_future_skew_seconds),
    )
    sock = bind_socket(settings.http_host, settings.http_port)
    http_port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(context), log_config=None, access_log=False, lifespan="off")
    )
    ingest_stopping = asyncio.Event()

    async def serve_http() -> None:
        await server.serve(sockets=[sock])
        stopping.set()  # uvicorn took the signal itself

    async def stop_on_signal() -> None:
        await stopping.wait()
        server.should_exit = True
        ingest_stopping.set()

    async def ingest() -> None:
        await consume(
            consumer=consumer,
            endpoint=broker.endpoint,
            service=broker.service,
            topics=topics,
            client_id="fieldline-ingest",
            stopping=ingest_stopping,
            drain=batcher.drain,
        )

    async def announce() -> None:
        # uvicorn offers no event for "started".
        while not server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        context.broker_started = True
        endpoint = broker.endpoint
        on_ready(
            StartupInfo(
                api_url=settings.public_url or _url(settings.http_host, http_port),
                mqtt_host=settings.advertised_mqtt_host,
                mqtt_port=endpoint.port,
                broker=type(broker).__name__,
                database=database_label,
                admin_password=admin_password,
            )
        )

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(batcher.run(), name="ingest-writer")
            group.create_task(ingest(), name="ingest-consumer")
            group.create_task(serve_http(), name="http-api")
            group.create_task(stop_on_signal(), name="signals")
            group.create_task(announce(), name="announce")
    finally:
        await writer.close()
