"""Collects decoded messages into batches and writes them with one writer.

Every message of a batch shares the batch's one future, which resolves only
after the batch is committed, so the MQTT acknowledgements (sent when it
resolves) mean "durably stored". Memory is bounded: a producer using `add()`
checks `has_room` and stops reading until `on_room` is called.

A failed write is retried until it succeeds, unless the database refused the
batch for what a message holds (`unstorable`): retrying would fail the same way
for ever and hold up every device behind it. Such a batch is split in halves,
each written on its own, down to the one message the database refuses, which
is kept in the rejected store as `unstorable` instead. Each message's parts are
remembered beside the batch for that, one tuple per message (a `Message`, as
ingest/consumer.py made it): the normal case pays for nothing else.

Where ingest batching is tuned: `FIELDLINE_BATCH_MAX_MESSAGES` (a batch is
written at this many messages), `FIELDLINE_BATCH_MAX_DELAY_MS` (or this long
after its first message; under load a batch also grows while the one before it
is written) and `FIELDLINE_INGEST_MAX_PENDING` (messages held unacknowledged
before ingest stops reading: back-pressure), in config.py. `Batcher` below
applies them (`max_messages`, `max_delay`, `max_pending`: `submit`/`add` and
`_run`); the ingest runner builds it from the settings and also gives the broker
`FIELDLINE_INGEST_MAX_PENDING` as MQTT 5's receive maximum (ingest/service.py).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fieldline.ingest.consumer import Message, batch_of, kept_as_unstorable
from fieldline.ops.backoff import Backoff
from fieldline.ops.metrics import WRITE_STALL_SECONDS, Metrics
from fieldline.storage.writer import (
    Batch,
    WriteResult,
    unstorable,
    unstorable_detail,
)

log = logging.getLogger(__name__)

WriteBatch = Callable[[Batch], Awaitable[WriteResult]]
BACKOFF_START_SECONDS = 0.2
BACKOFF_CAP_SECONDS = 10.0


@dataclass(slots=True)
class _Open:
    done: asyncio.Future[None]
    messages: list[Message] = field(default_factory=list)
    first_at: float = 0.0
    received_at: list[float] = field(default_factory=list)


class _Unstorable(Exception):
    """The database refused a batch for what one of its messages holds."""


class Batcher:
    def __init__(
        self,
        *,
        write: WriteBatch,
        metrics: Metrics,
        max_messages: int,
        max_delay: float,
        max_pending: int | None = None,
    ) -> None:
        self._write = write
        self._metrics = metrics
        self._max_messages = max_messages
        self._max_delay = max_delay
        self._max_pending = max_pending or max_messages * 10
        self._open = self._new_batch()
        self._pending = 0
        self._on_room: Callable[[], None] | None = None
        # When the write under way began its first attempt (None: no write under way).
        self._writing_since: float | None = None
        # Read when /metrics is scraped, not written per message.
        metrics.ingest_queue_depth.set_function(lambda: self._pending)
        metrics.watch_ingest_writes(self.write_stalled_seconds)
        self._wake = asyncio.Event()
        self._room = asyncio.Condition()
        self._closing = False
        self._finished = asyncio.Event()

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def has_room(self) -> bool:
        return self._pending < self._max_pending

    def write_stalled_seconds(self) -> float:
        """How long the batch being written has waited for its commit (0: none waiting)."""
        since = self._writing_since
        return 0.0 if since is None else time.monotonic() - since

    @property
    def stalled(self) -> bool:
        """A write has been failing or hanging for WRITE_STALL_SECONDS: not ready."""
        return self.write_stalled_seconds() > WRITE_STALL_SECONDS

    def on_room(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, when a commit brings the pending messages under the limit."""
        self._on_room = callback

    async def wait_for_room(self) -> None:
        async with self._room:
            await self._room.wait_for(lambda: self._pending < self._max_pending)

    def add(self, message: Message) -> asyncio.Future[None]:
        """Queue one message as the consumer made it (ingest/consumer.py); answer the
        future of its batch's commit. Its topic and payload, as it arrived, are kept in
        case the database refuses what it became."""
        current = self._open
        messages = current.messages
        now = time.monotonic()
        if not messages:
            current.first_at = now
        # The batch's lists are built from these at commit, in one pass.
        messages.append(message)
        current.received_at.append(now)
        self._pending += 1
        count = len(messages)
        if count >= self._max_messages or count == 1:
            self._wake.set()
        return current.done

    @staticmethod
    def _new_batch() -> _Open:
        return _Open(done=asyncio.get_running_loop().create_future())

    async def run(self) -> None:
        """Write batches until `drain()`; the last open batch is written before returning."""
        try:
            await self._run()
        finally:
            self._finished.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            current = self._open
            if not current.messages:
                if self._closing:
                    return
                continue
            deadline = current.first_at + self._max_delay
            while len(current.messages) < self._max_messages and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=remaining)
                except TimeoutError:
                    break
            self._open = self._new_batch()
            await self._commit(current)
            self._wake.set()  # look again at what arrived during the write

    async def drain(self) -> None:
        """Write what is open, then stop; returns once `run()` has finished."""
        self._closing = True
        self._wake.set()
        await self._finished.wait()

    async def _commit(self, current: _Open) -> None:
        self._writing_since = time.monotonic()
        try:
            result = await self._store(batch_of(current.messages), current.messages)
        finally:
            self._writing_since = None
        now = time.monotonic()
        metrics = self._metrics
        messages = len(current.messages)
        metrics.batch_size.observe(messages)
        count_outcomes(metrics, messages, result)
        for received in current.received_at:
            metrics.ingest_latency.observe(now - received)
        if not current.done.done():
            current.done.set_result(None)
        self._pending -= messages
        if self._on_room is not None and self._pending < self._max_pending:
            callback, self._on_room = self._on_room, None
            callback()
        async with self._room:
            self._room.notify_all()

    async def _store(self, batch: Batch, messages: list[Message]) -> WriteResult:
        """Write `batch`; split it while the database refuses what one of its messages holds."""
        try:
            return await self._write_until_done(batch, len(messages))
        except _Unstorable as refused:
            if len(messages) == 1:
                return await self._write_until_done(
                    kept_as_unstorable(messages[0], str(refused)), 1
                )
        half = len(messages) // 2
        first, second = messages[:half], messages[half:]
        return await self._store(batch_of(first), first) + await self._store(
            batch_of(second), second
        )

    async def _write_until_done(self, batch: Batch, messages: int) -> WriteResult:
        """Write, retrying with capped, jittered backoff; raise _Unstorable when retrying
        cannot help."""
        backoff = Backoff(cap=BACKOFF_CAP_SECONDS, start=BACKOFF_START_SECONDS)
        while True:
            try:
                return await self._write(batch)
            except Exception as exc:
                self._metrics.write_errors.inc()
                if unstorable(exc):
                    log.warning(
                        "batch refused by the database for what a message holds; splitting it",
                        extra={"messages": messages, "error": str(exc)},
                    )
                    raise _Unstorable(unstorable_detail(exc)) from exc
                delay = backoff.next()
                log.exception(
                    "batch write failed; retrying",
                    extra={"messages": messages, "retry_in": round(delay, 2)},
                )
                await asyncio.sleep(delay)


def count_outcomes(metrics: Metrics, messages: int, result: WriteResult) -> None:
    """Count a committed batch of `messages`: each is stored, a duplicate or rejected."""
    metrics.readings_stored.inc(result.readings_stored)
    metrics.points_stored.inc(result.points)
    metrics.duplicates.inc(result.duplicates)
    metrics.messages_duplicate.inc(result.duplicate_messages)
    reasons = result.rejected_reasons
    if reasons:
        for reason, count in collections.Counter(reasons).items():
            metrics.messages_rejected.labels(reason=reason).inc(count)
    metrics.messages_stored.inc(messages - len(reasons) - result.duplicate_messages)
