"""One ingest process's parts, as `fieldline ingest`, `fieldline up` and tests run them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fieldline.broker.base import BrokerEndpoint, ServiceAccount
from fieldline.config import Settings
from fieldline.ingest.batcher import Batcher
from fieldline.ingest.consumer import decode_limits
from fieldline.ingest.ratelimit import rate_limiter_from
from fieldline.ingest.service import IngestConsumer, consume
from fieldline.ingest.writer import BatchWriter
from fieldline.ops.metrics import Metrics

log = logging.getLogger(__name__)

INGEST_CLIENT_PREFIX = "fieldline-ingest-"
# A retiring ingest instance ends its session once its queue has been quiet this long.
RETIRE_IDLE_SECONDS = 3.0
INGEST_DRAIN_SECONDS = 10.0  # at most, for ingest to store what it holds when it stops


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
        self._topics = settings.topics
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
