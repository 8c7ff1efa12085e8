"""The ingest side of the one writer: a dedicated connection, reopened after failures."""

from __future__ import annotations

import logging

from psycopg import AsyncConnection

from fieldline.storage.writer import (
    Batch,
    PartitionCache,
    RecentPresence,
    WriteResult,
    write_batch,
)

log = logging.getLogger(__name__)


class BatchWriter:
    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: AsyncConnection[object] | None = None
        self._partitions = PartitionCache()
        self._recent = RecentPresence()

    async def __call__(self, batch: Batch) -> WriteResult:
        if self._conn is None or self._conn.closed:
            self._conn = await AsyncConnection.connect(
                self._url, autocommit=True, application_name="fieldline-ingest"
            )
        try:
            return await write_batch(self._conn, batch, self._partitions, self._recent)
        except Exception:
            # A broken connection must not be reused; the batcher retries the batch.
            await self.close()
            raise

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
