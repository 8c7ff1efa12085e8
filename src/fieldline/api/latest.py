"""The fleet's latest values, kept current in the API process for the fleet view.

Rendering 10,000 devices' latest values from their rows costs 150-200 ms of Python
per request (and PostgreSQL, building the JSON itself, 75-100 ms). The mirror keeps
one pre-encoded JSON object per device instead, so a page is a join of bytes.

It stays exact without polling: every writer announces, in the transaction that
changes `telemetry_latest`, the devices it changed (`LATEST_CHANNEL`, delivered at
commit). Before answering, a request sends its own token on that channel and waits
for it to come back: notifications arrive in commit order, so by then every change
committed before the request is known, and the changed devices are read again.
An answer is never older than the request.

The mirror starts with the first request that needs it (an API never asked for the
fleet view pays nothing) and holds one listening connection. If that connection
fails, requests fall back to reading the rows (`MirrorUnavailable`) and the next one
starts the mirror again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection, Error

from fieldline.storage import telemetry as telemetry_store

logger = logging.getLogger(__name__)

SYNC_TIMEOUT_SECONDS = 5.0
APPLICATION_NAME = "fieldline latest mirror"  # its connection, as pg_stat_activity shows it
_SYNC_PREFIX = "sync:"


class MirrorUnavailable(Exception):
    """The mirror could not answer; read the rows instead."""


def encode_device(device_id: str, metrics: dict[str, dict[str, Any]]) -> bytes:
    """One item of the fleet view: `{"device_id", "metrics": {name: {value, time}}}`."""
    return orjson.dumps({"device_id": device_id, "metrics": metrics}, option=orjson.OPT_UTC_Z)


def _encode_rows(rows: Sequence[tuple[str, str, float, datetime]]) -> dict[str, bytes]:
    """Rows ordered by device, encoded one object per device."""
    encoded: dict[str, bytes] = {}
    for device_id, group in itertools.groupby(rows, key=lambda row: row[0]):
        metrics = {metric: {"value": value, "time": time} for _, metric, value, time in group}
        encoded[device_id] = encode_device(device_id, metrics)
    return encoded


async def read_encoded(conn: AsyncConnection[Any], device_ids: list[str]) -> list[bytes]:
    """Each device's item read from its rows: the mirror's fallback."""
    encoded = _encode_rows(await telemetry_store.latest_rows(conn, device_ids))
    return [encoded.get(device_id) or encode_device(device_id, {}) for device_id in device_ids]


class LatestMirror:
    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._token_prefix = f"{_SYNC_PREFIX}{os.getpid()}.{secrets.token_hex(4)}."
        self._tokens = itertools.count()
        self._devices: dict[str, bytes] = {}
        self._changed: set[str] = set()
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._connection: AsyncConnection[Any] | None = None
        self._starting = asyncio.Lock()
        self._refreshing = asyncio.Lock()
        self._watchers: dict[str, set[asyncio.Event]] = {}

    async def encoded(self, conn: AsyncConnection[Any], device_ids: list[str]) -> list[bytes]:
        """Each device's item, as of now; `conn` is the request's (autocommit) connection."""
        try:
            await self._start()
            await self._sync(conn)
            await self._refresh(conn)
        except (Error, OSError, TimeoutError) as exc:
            logger.warning("latest-values mirror unavailable", extra={"error": str(exc)})
            await self._stop()
            raise MirrorUnavailable(str(exc)) from exc
        devices = self._devices
        return [devices.get(device_id) or encode_device(device_id, {}) for device_id in device_ids]

    async def close(self) -> None:
        await self._stop()

    @contextlib.contextmanager
    def changes(self, device_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever a change of the device's latest values is announced.

        Only a wake-up call: whoever waits reads the values themselves. It stays
        unset while the mirror is not running (see `start`).
        """
        event = asyncio.Event()
        self._watchers.setdefault(device_id, set()).add(event)
        try:
            yield event
        finally:
            watching = self._watchers.get(device_id)
            if watching is not None:
                watching.discard(event)
                if not watching:
                    del self._watchers[device_id]

    async def start(self) -> bool:
        """Start listening if not yet; False if the database cannot be reached now."""
        try:
            await self._start()
        except (Error, OSError) as exc:
            logger.warning("latest-values mirror unavailable", extra={"error": str(exc)})
            return False
        return True

    async def _start(self) -> None:
        async with self._starting:
            if self._listener is not None and not self._listener.done():
                return
            await self._stop()
            connection = await AsyncConnection.connect(
                self._url, autocommit=True, application_name=APPLICATION_NAME
            )
            try:
                await connection.execute(f"LISTEN {telemetry_store.LATEST_CHANNEL}")
                # Listening first: a change committed during the load is also announced
                # (and read again), never missed.
                self._devices = _encode_rows(await telemetry_store.latest_rows(connection, None))
            except BaseException:
                await connection.close()
                raise
            self._changed.clear()
            self._connection = connection
            self._listener = asyncio.create_task(self._listen(connection), name="latest-mirror")

    async def _listen(self, connection: AsyncConnection[Any]) -> None:
        try:
            async for notice in connection.notifies():
                payload = notice.payload
                if payload.startswith(_SYNC_PREFIX):
                    waiter = self._waiting.pop(payload, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                else:
                    devices = payload.split(",")
                    self._changed.update(devices)
                    self._wake(devices)
        except Error as exc:
            logger.warning("latest-values mirror lost its connection", extra={"error": str(exc)})
        finally:
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(OSError("the mirror's connection ended"))
            self._waiting.clear()

    def _wake(self, devices: list[str]) -> None:
        if not self._watchers:
            return
        for device_id in devices:
            for event in self._watchers.get(device_id, ()):
                event.set()

    async def _sync(self, conn: AsyncConnection[Any]) -> None:
        """Return once every change committed before now has been announced to us."""
        token = f"{self._token_prefix}{next(self._tokens)}"
        arrived = asyncio.get_running_loop().create_future()
        self._waiting[token] = arrived
        try:
            await conn.execute("SELECT pg_notify(%s, %s)", (telemetry_store.LATEST_CHANNEL, token))
            await asyncio.wait_for(arrived, SYNC_TIMEOUT_SECONDS)
        finally:
            self._waiting.pop(token, None)

    async def _refresh(self, conn: AsyncConnection[Any]) -> None:
        async with self._refreshing:
            if not self._changed:
                return
            changed, self._changed = self._changed, set()
            try:
                rows = await telemetry_store.latest_rows(conn, sorted(changed))
            except BaseException:
                self._changed |= changed
                raise
            fresh = _encode_rows(rows)
            for device_id in changed:
                encoded = fresh.get(device_id)
                if encoded is None:  # deleted, or never had a value
                    self._devices.pop(device_id, None)
                else:
                    self._devices[device_id] = encoded

    async def _stop(self) -> None:
        listener, self._listener = self._listener, None
        connection, self._connection = self._connection, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Error):
                await listener
        if connection is not None:
            with contextlib.suppress(Error, OSError):
                await connection.close()
        self._devices = {}
        self._changed.clear()
