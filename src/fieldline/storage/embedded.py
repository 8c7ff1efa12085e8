"""How every command reaches its database: the one way, for `up` and all the others.

`DATABASE_URL` names an external server. Otherwise the database is the embedded
PostgreSQL in the data directory (`--data-dir`, FIELDLINE_DATA_DIR):

- `fieldline up` owns the data directory (its lock), starts the server, starts it
  again whenever it dies, and stops it when `up` stops (`served_database`);
- any other command (`user create`, `migrate`, ...) borrows the server of a running
  `up`, and never stops it; with no `up` running it takes the lock, starts the
  server for itself and stops it afterwards (`database`). It never creates a
  database: only `up` does, so a wrong data directory is an error, not a new
  empty instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fieldline.config import Settings
from fieldline.ops.backoff import Backoff
from fieldline.ops.datadir import DataDirLock, Holder, write_private
from fieldline.ops.sockets import port_in_use
from fieldline.storage.pgserver import LocalPostgres, PostgresServerError

log = logging.getLogger(__name__)

# How long a command waits for the data directory: another command holding it
# finishes in seconds, and a running `up` restarting its server takes about one.
WAIT_SECONDS = 30.0
CHECK_SECONDS = 1.0  # how often `up` looks at its server
RESTART_BACKOFF_CAP_SECONDS = 15.0


class DatabaseUnavailable(RuntimeError):
    """No database this command may use; the message says what to do."""


class DataDirInUse(DatabaseUnavailable):
    """Another `fieldline up` runs on this data directory."""


@dataclass(frozen=True, slots=True)
class Database:
    url: str
    label: str  # where it is, for people


def server_directory(data_dir: Path) -> Path:
    """Where the embedded PostgreSQL of `data_dir` keeps its files."""
    return data_dir / "postgres"


@contextlib.asynccontextmanager
async def database(settings: Settings, *, command: str) -> AsyncIterator[Database]:
    """The database of `fieldline <command>`, found as `up` finds it, also while `up` runs."""
    if settings.database_url:
        yield Database(settings.database_url, "external PostgreSQL")
        return
    data_dir = settings.data_dir.resolve()
    server = LocalPostgres(server_directory(data_dir))
    if not server.initialised:
        raise DatabaseUnavailable(
            f"no fieldline database in {data_dir}: run `fieldline up` there once to create "
            "it, or name the right directory with --data-dir (FIELDLINE_DATA_DIR), or an "
            "external server with DATABASE_URL"
        )
    lock = await _lock_or_running_up(data_dir, command, server)
    if isinstance(lock, Database):
        yield lock
        return
    try:
        url = await asyncio.to_thread(server.start)
        try:
            yield Database(
                url, f"embedded PostgreSQL on {server.host}:{server.port} in {server.data_dir}"
            )
        finally:
            await asyncio.to_thread(server.stop)
    finally:
        lock.release()


async def _lock_or_running_up(
    data_dir: Path, command: str, server: LocalPostgres
) -> DataDirLock | Database:
    """The data directory's lock, or the database of the `fieldline up` holding it."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        taken = DataDirLock.acquire(data_dir, command)
        if isinstance(taken, DataDirLock):
            return taken
        if taken.command == "up":
            try:
                url = await asyncio.to_thread(server.attach)
            except PermissionError as exc:
                raise DatabaseUnavailable(
                    f"{exc}: run this command as the user {taken} runs as"
                ) from exc
            except (PostgresServerError, OSError) as exc:
                problem = f"the database of {taken} is not running ({exc}); see its log"
            else:
                return Database(url, f"the embedded PostgreSQL of {taken}")
        else:
            problem = f"{data_dir} is in use by {taken}; try again once it has finished"
        if time.monotonic() > deadline:
            raise DatabaseUnavailable(problem)
        await asyncio.sleep(0.2)


async def own_data_dir(data_dir: Path) -> DataDirLock:
    """`fieldline up`'s claim on its data directory; refused while another `up` runs.

    A command that holds it for a moment (`user create` with no `up` running) is
    waited for.
    """
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        taken: DataDirLock | Holder = DataDirLock.acquire(data_dir, "up")
        if isinstance(taken, DataDirLock):
            return taken
        if taken.command == "up" or time.monotonic() > deadline:
            raise DataDirInUse(
                f"another fieldline instance, {taken}, is running on {data_dir}; "
                "stop it first, or give this one another --data-dir"
            )
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def served_database(settings: Settings) -> AsyncIterator[Database]:
    """`fieldline up`'s database, kept running while `up` runs; the caller owns the data dir.

    The embedded server is started (one left running by a killed `up` is stopped
    first), watched, started again on the same port whenever it dies (meanwhile
    /ready answers 503), and stopped at the end.
    """
    if settings.database_url:
        yield Database(settings.database_url, "external PostgreSQL")
        return
    server = LocalPostgres(
        server_directory(settings.data_dir),
        port=database_port(settings.data_dir, settings.database_port),
    )
    url = await asyncio.to_thread(server.start)
    remember_port(settings.data_dir, server.port)
    closing = asyncio.Event()
    keeper = asyncio.create_task(_keep_running(server, closing), name="database-keeper")
    try:
        yield Database(
            url, f"embedded PostgreSQL on {server.host}:{server.port} in {server.data_dir}"
        )
    finally:
        closing.set()
        await keeper  # a restart under way finishes first, so that it is stopped too
        await asyncio.to_thread(server.stop)


def _port_file(data_dir: Path) -> Path:
    return data_dir / "database.port"


def database_port(data_dir: Path, configured: int | None) -> int:
    """The embedded database's port: the one configured, else the one it used before (so
    that Grafana or psql pointed at it keep working), else 0 for a free one. A remembered
    port something else took meanwhile is given up for a free one."""
    if configured is not None:
        return configured
    try:
        remembered = int(_port_file(data_dir).read_text().strip())
    except (OSError, ValueError):
        return 0
    if port_in_use("127.0.0.1", remembered):
        log.warning(
            "the embedded database's port is taken; it moves to a free one",
            extra={"port": remembered},
        )
        return 0
    return remembered


def remember_port(data_dir: Path, port: int) -> None:
    write_private(_port_file(data_dir), f"{port}\n")


async def _keep_running(server: LocalPostgres, closing: asyncio.Event) -> None:
    backoff = Backoff(cap=RESTART_BACKOFF_CAP_SECONDS)
    while not await _wait(closing, CHECK_SECONDS):
        if server.running():
            continue
        log.error(
            "the embedded postgresql stopped unexpectedly; starting it again",
            extra={"data_dir": str(server.data_dir), "port": server.port},
        )
        while True:
            try:
                await asyncio.to_thread(server.start)
            except (PostgresServerError, OSError) as exc:
                wait = backoff.next()
                log.warning(
                    "postgresql did not start; retrying",
                    extra={"error": str(exc), "retry_in": round(wait, 2)},
                )
                if await _wait(closing, wait):
                    return
                continue
            log.info("the embedded postgresql runs again", extra={"port": server.port})
            backoff.reset()
            break


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `event`; answer whether it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()
