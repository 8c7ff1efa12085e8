"""Starting and stopping a component: signals, bounded stops, waiting for servers.

Shared by `fieldline up` (runtime/supervisor.py) and the single components
(runtime/components.py); the bounds add up as the package's docstring says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import psycopg

from fieldline.broker.base import Broker, BrokerError
from fieldline.broker.factory import create_broker
from fieldline.config import Settings
from fieldline.ops.backoff import Backoff, sleep_unless
from fieldline.storage import devices as device_store
from fieldline.storage.db import Pool
from fieldline.storage.migrate import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_CAP_SECONDS = 15.0  # waiting for the database or broker at start
STOP_GRACE_SECONDS = 30.0
WORKER_GRACE_SECONDS = 5.0  # housekeeping is idempotent: the next start does it again
CLIENT_CLOSE_SECONDS = 2.0  # closing a database pool or an MQTT client


def install_signal_handlers(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)


async def stop_within(
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


async def close_within(closing: Awaitable[None]) -> None:
    """Close a client of a server that may not answer (then it is simply dropped)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closing, CLIENT_CLOSE_SECONDS)


async def retrying(
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


async def start_broker(settings: Settings, pool: Pool) -> Broker:
    """The broker adapter, started with the registry's devices (it reconciles)."""
    broker = create_broker(settings)
    async with pool.connection() as conn:
        registry = await device_store.all_device_access(conn)
    await broker.start(registry)  # reconciles; the adapter logs any drift
    return broker


async def start_broker_when_reachable(
    settings: Settings, pool: Pool, stopping: asyncio.Event
) -> Broker | None:
    """Start the broker adapter, waiting while the broker is down; None when stopped."""
    return await retrying(
        lambda: start_broker(settings, pool),
        "broker not ready; retrying",
        (BrokerError, OSError, TimeoutError),
        stopping,
    )


async def migrate_when_reachable(url: str, stopping: asyncio.Event) -> bool:
    """Apply migrations once the database answers; False when stopped first."""
    applied = await retrying(
        lambda: migrate(url),
        "database unreachable; retrying",
        (psycopg.OperationalError,),
        stopping,
    )
    return applied is not None
