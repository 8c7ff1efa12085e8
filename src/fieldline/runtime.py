"""Running fieldline's components: the HTTP API, ingest and the worker.

`run_platform` is what `fieldline up` runs: the database and broker it
manages, then every component as a named task in one TaskGroup, so a failure
of any part stops the whole group cleanly (beside the in-process amqtt broker,
ingest is a child process that a task of the group supervises). `run_api`,
`run_ingest` and `run_worker` run one component each as its own process,
against an external PostgreSQL and broker (the production topology).

Every stop ends in bounded time, also while the database is down or a write
hangs: ingest stores what it holds for at most INGEST_DRAIN_SECONDS (the rest
stays unacknowledged at the broker, which sends it again), then whatever still
runs STOP_GRACE_SECONDS after the stop was asked is cancelled; each step after
that (broker, pool, database server) has its own bound. Added up, `fieldline
up` stops within 90 s in every case (systemd's default TimeoutStopSec), and in
about 35 s when its database hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import uvicorn

from fieldline.api.app import create_app
from fieldline.api.context import ApiContext
from fieldline.broker.base import Broker, BrokerEndpoint, BrokerError, ServiceAccount
from fieldline.broker.embedded import AmqttBroker
from fieldline.broker.factory import create_broker, external_client
from fieldline.broker.publisher import Publisher
from fieldline.config import BrokerKind, Settings
from fieldline.domain.topics import TopicScheme
from fieldline.domain.users import Role
from fieldline.ingest.batcher import Batcher
from fieldline.ingest.child import IngestChild
from fieldline.ingest.ratelimit import rate_limiter_from
from fieldline.ingest.service import IngestConsumer, consume, decode_limits
from fieldline.ingest.writer import BatchWriter
from fieldline.ops.backoff import Backoff, sleep_unless
from fieldline.ops.datadir import private_directory
from fieldline.ops.metrics import Metrics
from fieldline.ops.secrets import stored_secret
from fieldline.ops.server import ReadyChecks, ops_app
from fieldline.security.passwords import USER_ITERATIONS, generate_secret, hash_secret
from fieldline.storage import devices as device_store
from fieldline.storage import users as user_store
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.embedded import Database, own_data_dir, served_database
from fieldline.storage.migrate import migrate
from fieldline.worker.service import Worker

log = logging.getLogger(__name__)

T = TypeVar("T")

ADMIN_USERNAME = "admin"
INGEST_CLIENT_PREFIX = "fieldline-ingest-"
# A retiring ingest instance ends its session once its queue has been quiet this long.
RETIRE_IDLE_SECONDS = 3.0
BACKOFF_CAP_SECONDS = 15.0  # waiting for the database or broker at start
# Bounds of a stop (see the module's docstring). amqtt's hand-over to the ingest child
# and the child's own drain fit in the grace period.
INGEST_DRAIN_SECONDS = 10.0  # at most, for ingest to store what it holds when it stops
UP_DRAIN_SECONDS = 12.0  # at most, for amqtt to hand ingest what it holds when `up` stops
STOP_GRACE_SECONDS = 30.0
WORKER_GRACE_SECONDS = 5.0  # housekeeping is idempotent: the next start does it again
HTTP_GRACE_SECONDS = 5.0  # for requests under way
CLIENT_CLOSE_SECONDS = 2.0  # closing a database pool or an MQTT client


class ConfigurationError(ValueError):
    """The settings cannot run the component asked for; the message says what to set."""


@dataclass(frozen=True, slots=True)
class StartupInfo:
    api_url: str
    mqtt_host: str
    mqtt_port: int
    mqtt_tls_port: int | None
    broker: str
    database: str
    admin_password: str | None  # set only when generated now, to be shown once


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
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says TCP, and without it every small answer on a kept-alive
    # connection waited ~40 ms for the client's delayed ACK (uvicorn issue 3149).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def _install_signal_handlers(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)


async def _stop_within(
    stopping: asyncio.Event, work: Coroutine[Any, Any, None], name: str, grace: float
) -> None:
    """Run `work`; once `stopping` is set it has `grace` seconds to end, then it is cancelled.

    Its own cleanup (`finally`) still runs after the cancellation; each step of it
    is bounded. Exceptions of `work` propagate.
    """
    task = asyncio.create_task(work, name=name)
    stop_asked = asyncio.create_task(stopping.wait(), name=f"{name}-stop-asked")
    try:
        await asyncio.wait({task, stop_asked}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            await asyncio.wait({task}, timeout=grace)
        if not task.done():
            log.error(
                "not stopped in time; cancelling what is left",
                extra={"component": name, "grace_s": grace},
            )
            task.cancel()
            await asyncio.wait({task})
    finally:
        stop_asked.cancel()
        if not task.done():  # this coroutine itself was cancelled
            task.cancel()
            await asyncio.wait({task})
    if not task.cancelled():
        task.result()


class HttpServer:
    """uvicorn on a socket bound beforehand (so port 0 is known before serving)."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        on_stopping: Callable[[], None] | None = None,
        after_stop: Callable[[], Awaitable[None]] | None = None,
        trusted_proxies: str = "",
    ) -> None:
        self.socket = bind_socket(host, port)
        self.port: int = self.socket.getsockname()[1]
        # No ASGI lifespan: what requests started is released by `after_stop`, once
        # uvicorn has stopped serving (a lifespan task cancelled at Ctrl-C logs an error).
        # X-Forwarded-For is believed only from `trusted_proxies` (none by default, not
        # uvicorn's loopback): the failed-credential limits count by the client address.
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=int(HTTP_GRACE_SECONDS),
                proxy_headers=bool(trusted_proxies),
                forwarded_allow_ips=trusted_proxies or None,
            )
        )
        self._on_stopping = on_stopping
        self._after_stop = after_stop

    async def serve(self, stopping: asyncio.Event) -> None:
        async def stop_on_signal() -> None:
            # uvicorn may take the signal itself: watch for its flag too.
            while not (stopping.is_set() or self._server.should_exit):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 0.2)
            self._server.should_exit = True
            if self._on_stopping is not None:
                # uvicorn waits for open requests; long-lived ones (event streams) end now.
                self._on_stopping()

        watcher = asyncio.create_task(stop_on_signal(), name="http-stop")
        try:
            await self._server.serve(sockets=[self.socket])
        finally:
            stopping.set()  # uvicorn may have taken the signal itself
            watcher.cancel()
            if self._after_stop is not None:
                await self._after_stop()

    async def wait_started(self) -> None:
        # uvicorn offers no event for "started".
        while not self._server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


class IngestRunner:
    """One ingest process's parts: the broker session, the batcher and its writer."""

    def __init__(
        self,
        *,
        settings: Settings,
        url: str,
        endpoint: BrokerEndpoint,
        service: ServiceAccount,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._endpoint = endpoint
        self._service = service
        self._metrics = metrics
        self._topics = TopicScheme(settings.topic_prefix)
        self._writer = BatchWriter(url)
        self.batcher = Batcher(
            write=self._writer,
            metrics=metrics,
            max_messages=settings.batch_max_messages,
            max_delay=settings.batch_max_delay_ms / 1000,
            max_pending=settings.ingest_max_pending,
        )
        self._consumer = IngestConsumer(
            batcher=self.batcher,
            topics=self._topics,
            metrics=metrics,
            limits=decode_limits(settings.max_payload_bytes, settings.max_future_skew_seconds),
            rate_limiter=rate_limiter_from(settings),
        )
        self.connected = asyncio.Event()
        self._writing: asyncio.Task[None] | None = None

    @property
    def client_id(self) -> str:
        return INGEST_CLIENT_PREFIX + self._settings.ingest_instance

    async def run(self, stopping: asyncio.Event, *, retire: bool = False) -> None:
        """Consume until `stopping`; what was received is written before returning.

        `retire`: leave the shared subscription, store this instance's queue and end
        its broker session, then return.
        """
        try:
            async with asyncio.TaskGroup() as group:
                self._writing = group.create_task(self.batcher.run(), name="ingest-writer")
                group.create_task(self._consume(stopping, retire), name="ingest-consumer")
        finally:
            await self._writer.close()

    async def _drain_within_bound(self) -> None:
        """Store what was received, for at most INGEST_DRAIN_SECONDS (the database may be
        down): what is left was never acknowledged, so the broker keeps it and sends it
        again to the next ingest session."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.batcher.drain(), INGEST_DRAIN_SECONDS)
            return
        log.warning(
            "stopping without storing every message received: the broker keeps them "
            "unacknowledged and delivers them again",
            extra={"not_stored": self.batcher.pending, "waited_s": INGEST_DRAIN_SECONDS},
        )
        if self._writing is not None:
            self._writing.cancel()

    async def _consume(self, stopping: asyncio.Event, retire: bool) -> None:
        try:
            await consume(
                consumer=self._consumer,
                endpoint=self._endpoint,
                service=self._service,
                topics=self._topics,
                client_id=self.client_id,
                share_group=self._settings.ingest_share_group or None,
                receive_maximum=self._settings.ingest_max_pending,
                stopping=stopping,
                # A retiring instance ends its session after the drain: it must store all.
                drain=self.batcher.drain if retire else self._drain_within_bound,
                connected=self.connected,
                on_connection=self._metrics.broker_connected.set,
                retire_when_idle=RETIRE_IDLE_SECONDS if retire else None,
            )
        finally:
            await self.batcher.drain()  # also when consume failed: run() must end


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
    _install_signal_handlers(stopping)
    data_dir = settings.data_dir.resolve()
    lock = await own_data_dir(data_dir)
    try:
        private_directory(data_dir)
        async with served_database(settings) as db:
            if stopping.is_set():  # asked while the database started
                return
            await _stop_within(
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
        admin_password = await ensure_admin(pool, settings)
        broker = await _start_broker(settings, pool)
        try:
            await _serve_all(
                settings, pool, broker, db.url, db.label, admin_password, on_ready, stopping
            )
        finally:
            await broker.stop()
    finally:
        await pool.close(timeout=CLIENT_CLOSE_SECONDS)


async def _start_broker(settings: Settings, pool: Pool) -> Broker:
    broker = create_broker(settings)
    async with pool.connection() as conn:
        registry = await device_store.all_device_access(conn)
    await broker.start(registry)  # reconciles; the adapter logs any drift
    return broker


async def _start_broker_when_reachable(
    settings: Settings, pool: Pool, stopping: asyncio.Event
) -> Broker | None:
    """Start the broker adapter, waiting while the broker is down; None when stopped."""
    return await _retrying(
        lambda: _start_broker(settings, pool),
        "broker not ready; retrying",
        (BrokerError, OSError, TimeoutError),
        stopping,
    )


async def _retrying(
    attempt: Callable[[], Awaitable[T]],
    message: str,
    errors: tuple[type[BaseException], ...],
    stopping: asyncio.Event,
) -> T | None:
    """`attempt()` until it succeeds, with capped, jittered backoff; None when stopped.

    A process started before its database or broker (a reboot, an orchestrator)
    waits for it instead of failing.
    """
    backoff = Backoff(cap=BACKOFF_CAP_SECONDS)
    while not stopping.is_set():
        try:
            return await attempt()
        except errors as exc:
            wait = backoff.next()
            log.warning(message, extra={"error": str(exc), "retry_in": round(wait, 2)})
            await sleep_unless(stopping, wait)
    return None


def _api_context(settings: Settings, pool: Pool, broker: Broker, metrics: Metrics) -> ApiContext:
    secret_key = (
        settings.secret_key.get_secret_value()
        if settings.secret_key
        else stored_secret(settings.data_dir, "secret_key")
    )
    return ApiContext(
        settings=settings, pool=pool, broker=broker, metrics=metrics, secret_key=secret_key
    )


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
    context = _api_context(settings, pool, broker, metrics)
    context.publisher = publisher
    ingest = await _up_ingest(settings, url, broker, metrics)
    worker = Worker(settings=settings, pool=pool, metrics=metrics, publisher=publisher)
    http = HttpServer(
        create_app(context),
        settings.http_host,
        settings.http_port,
        on_stopping=context.closing.set,
        after_stop=context.close,
        trusted_proxies=settings.trusted_proxies,
    )

    async def announce() -> None:
        await http.wait_started()
        context.broker_started = True
        on_ready(
            StartupInfo(
                api_url=settings.public_url or _url(settings.http_host, http.port),
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
                _stop_within(stopping, worker.run(stopping), "worker", WORKER_GRACE_SECONDS),
                name="worker",
            )
            group.create_task(http.serve(stopping), name="http-api")
            group.create_task(announce(), name="announce")
    finally:
        await _close_within(publisher.stop())


async def _close_within(closing: Awaitable[None]) -> None:
    """Close a client of a server that may not answer (then it is simply dropped)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closing, CLIENT_CLOSE_SECONDS)


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


async def _migrate_when_reachable(url: str, stopping: asyncio.Event) -> bool:
    """Apply migrations once the database answers; False when stopped first."""
    applied = await _retrying(
        lambda: migrate(url),
        "database unreachable; retrying",
        (psycopg.OperationalError,),
        stopping,
    )
    return applied is not None


def _external_database(settings: Settings, component: str) -> str:
    if not settings.database_url:
        raise ConfigurationError(
            f"`fieldline {component}` runs against an external PostgreSQL: set DATABASE_URL "
            "(`fieldline up` runs an embedded one)"
        )
    return settings.database_url


def _require_external_broker(settings: Settings, component: str) -> None:
    if settings.broker != BrokerKind.EXTERNAL:
        raise ConfigurationError(
            f"`fieldline {component}` runs against a broker it does not start: set "
            "FIELDLINE_BROKER=external and the broker settings (`fieldline up` manages one)"
        )


async def run_api(
    settings: Settings,
    *,
    on_ready: Callable[[str], None],
    stopping: asyncio.Event | None = None,
) -> None:
    """`fieldline api`: the HTTP API; it also keeps the broker's device list in step."""
    url = _external_database(settings, "api")
    _require_external_broker(settings, "api")
    stopping = stopping or asyncio.Event()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _install_signal_handlers(stopping)
    if not await _migrate_when_reachable(url, stopping):
        return
    pool = await open_pool(url, min_size=2, max_size=10, name="fieldline-api")
    try:
        admin_password = await ensure_admin(pool, settings)
        broker = await _start_broker_when_reachable(settings, pool, stopping)
        if broker is None:
            return
        publisher = Publisher(broker.endpoint, broker.service, role="api")
        try:
            await publisher.start()
            context = _api_context(settings, pool, broker, Metrics())
            context.broker_started = True
            context.publisher = publisher
            http = HttpServer(
                create_app(context),
                settings.http_host,
                settings.http_port,
                on_stopping=context.closing.set,
                after_stop=context.close,
                trusted_proxies=settings.trusted_proxies,
            )

            async def announce() -> None:
                await http.wait_started()
                lines = [f"fieldline api listening on {_url(settings.http_host, http.port)}"]
                if admin_password:
                    lines.append(f"admin password (shown only now): {admin_password}")
                on_ready("\n".join(lines))

            async with asyncio.TaskGroup() as group:
                group.create_task(http.serve(stopping), name="http-api")
                group.create_task(announce(), name="announce")
        finally:
            await _close_within(publisher.stop())
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
    stopping: asyncio.Event,
    main: Callable[[], Any],
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
    url = _external_database(settings, "ingest")
    _require_external_broker(settings, "ingest")
    endpoint, service = external_client(settings)
    stopping = stopping or asyncio.Event()
    _install_signal_handlers(stopping)
    if not await _migrate_when_reachable(url, stopping):
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

    async def main() -> None:
        announcing = asyncio.create_task(announce(), name="announce")
        watching = (
            asyncio.create_task(_set_when_stdin_closes(stopping), name="stdin-watch")
            if supervised
            else None
        )
        try:
            await ingest.run(stopping, retire=retire)
        finally:
            announcing.cancel()
            if watching is not None:
                watching.cancel()
        if retire and not stopping.is_set():
            on_ready(f"fieldline ingest {settings.ingest_instance} retired")

    await _stop_within(
        stopping,
        _with_ops_server(settings, metrics, checks, stopping, main),
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
    url = _external_database(settings, "worker")
    stopping = stopping or asyncio.Event()
    _install_signal_handlers(stopping)
    if not await _migrate_when_reachable(url, stopping):
        return
    metrics = Metrics()
    publisher = await _worker_publisher(settings, stopping)
    pool = await open_pool(url, min_size=1, max_size=2, name="fieldline-worker")
    try:
        worker = Worker(settings=settings, pool=pool, metrics=metrics, publisher=publisher)

        async def checks() -> dict[str, bool]:
            return {"database": await _database_reachable(url)}

        async def main() -> None:
            on_ready(f"fieldline worker running every {settings.worker_interval_seconds:g} s")
            await worker.run(stopping)

        await _stop_within(
            stopping,
            _with_ops_server(settings, metrics, checks, stopping, main),
            "fieldline worker",
            WORKER_GRACE_SECONDS,
        )
    finally:
        await pool.close(timeout=CLIENT_CLOSE_SECONDS)
        if publisher is not None:
            await _close_within(publisher.stop())


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

    return await _retrying(start, "broker not ready; retrying", (BrokerError, OSError), stopping)
