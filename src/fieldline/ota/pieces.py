"""Firmware pieces an API process keeps in memory while devices download them.

A rollout sends the same image to many devices within minutes: each piece is read from
PostgreSQL once and then served from here. A piece never changes (an image is never
rewritten, only deleted, and its id is not reused), so nothing here can go stale. The
cache is bounded in bytes, least recently used first out; devices asking for a piece
being read wait for that one read instead of starting their own.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

CACHE_BYTES = 64 * 1024 * 1024

Key = tuple[int, int]  # (firmware id, piece number)


class PieceCache:
    def __init__(self, capacity_bytes: int = CACHE_BYTES) -> None:
        self._capacity = capacity_bytes
        self._pieces: OrderedDict[Key, bytes] = OrderedDict()
        self._size = 0
        self._reading: dict[Key, asyncio.Future[bytes]] = {}

    @property
    def size(self) -> int:
        return self._size

    async def get(self, key: Key, read: Callable[[], Awaitable[bytes]]) -> bytes:
        piece = self._pieces.get(key)
        if piece is not None:
            self._pieces.move_to_end(key)
            return piece
        pending = self._reading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._reading[key] = future
        try:
            piece = await read()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if none waited
            raise
        except BaseException:
            future.cancel()  # this request was cancelled: those waiting on its read too
            raise
        finally:
            del self._reading[key]
        future.set_result(piece)
        self._keep(key, piece)
        return piece

    def _keep(self, key: Key, piece: bytes) -> None:
        if len(piece) > self._capacity:
            return
        self._pieces[key] = piece
        self._size += len(piece)
        while self._size > self._capacity:
            _, dropped = self._pieces.popitem(last=False)
            self._size -= len(dropped)
