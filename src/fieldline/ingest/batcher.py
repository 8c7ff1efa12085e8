"""Collects decoded messages into batches and writes them with one writer.

Every message of a batch shares the batch's one future, which resolves only
after the batch is committed, so the MQTT acknowledgements (sent when it
resolves) mean "durably stored". Memory is bounded: `add()` waits while
`max_pending` messages are unwritten; a producer using `submit()` checks
`has_room` and stops reading until `on_room` is called.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fieldline.ops.metrics import Metrics
from fieldline.storage.commands import ReportedResult
from fieldline.storage.writer import Batch, DeviceReadings, Presence, RejectedMessage, WriteResult

log = logging.getLogger(__name__)

WriteBatch = Callable[[Batch], Awaitable[WriteResult]]
BACKOFF_START_SECONDS = 0.2
BACKOFF_CAP_SECONDS = 10.0


@dataclass(slots=True)
class _Open:
    done: asyncio.Future[None]
    batch: Batch = field(default_factory=Batch)
    messages: int = 0
    first_at: float = 0.0
    received_at: list[float] = field(default_factory=list)


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
        # Read when /metrics is scraped, not written per message.
        metrics.ingest_queue_depth.set_function(lambda: self._pending)
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

    def on_room(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, when a commit brings the pending messages under the limit."""
        self._on_room = callback

    async def wait_for_room(self) -> None:
        async with self._room:
            await self._room.wait_for(lambda: self._pending < self._max_pending)

    async def add(
        self,
        *,
        telemetry: DeviceReadings | None = None,
        presence: Presence | None = None,
        rejected: RejectedMessage | None = None,
        command_result: ReportedResult | None = None,
    ) -> None:
        """Queue one message's outcome once there is room; return once it is committed."""
        await self.wait_for_room()
        await self.submit(
            telemetry=telemetry,
            presence=presence,
            rejected=rejected,
            command_result=command_result,
        )

    def submit(
        self,
        *,
        telemetry: DeviceReadings | None = None,
        presence: Presence | None = None,
        rejected: RejectedMessage | None = None,
        command_result: ReportedResult | None = None,
    ) -> asyncio.Future[None]:
        """Queue one message's outcome now; answer the future of its batch's commit."""
        current = self._open
        if current.messages == 0:
            current.first_at = time.monotonic()
        if telemetry is not None:
            current.batch.telemetry.append(telemetry)
        if presence is not None:
            current.batch.presence.append(presence)
        if rejected is not None:
            current.batch.rejected.append(rejected)
        if command_result is not None:
            current.batch.command_results.append(command_result)
        current.messages += 1
        current.received_at.append(time.monotonic())
        self._pending += 1
        if current.messages >= self._max_messages or current.messages == 1:
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
            if current.messages == 0:
                if self._closing:
                    return
                continue
            deadline = current.first_at + self._max_delay
            while current.messages < self._max_messages and not self._closing:
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
        delay = BACKOFF_START_SECONDS
        while True:
            try:
                result = await self._write(current.batch)
                break
            except Exception:
                self._metrics.write_errors.inc()
                log.exception(
                    "batch write failed; retrying",
                    extra={"messages": current.messages, "retry_in": delay},
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311
                delay = min(delay * 2, BACKOFF_CAP_SECONDS)
        now = time.monotonic()
        metrics = self._metrics
        metrics.batch_size.observe(current.messages)
        metrics.readings_stored.inc(result.readings_stored)
        metrics.points_stored.inc(result.points)
        metrics.duplicates.inc(result.duplicates)
        for reason in result.rejected_reasons:
            metrics.messages_rejected.labels(reason=reason).inc()
        for received in current.received_at:
            metrics.ingest_latency.observe(now - received)
        if not current.done.done():
            current.done.set_result(None)
        self._pending -= current.messages
        if self._on_room is not None and self._pending < self._max_pending:
            callback, self._on_room = self._on_room, None
            callback()
        async with self._room:
            self._room.notify_all()
