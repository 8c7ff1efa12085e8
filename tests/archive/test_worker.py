"""The worker's archive job in process: a store that cannot be written is a failed run
that loses nothing (retention keeps the raw points), and the next run catches up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from fieldline.config import Settings
from fieldline.ops.metrics import Metrics
from fieldline.ops.sockets import free_port
from fieldline.storage.db import open_pool
from fieldline.worker.archive import ArchiveRound
from fieldline.worker.service import Worker
from tests.archive.test_archive import readings, store_readings
from tests.conftest import S3Server, create_devices


async def test_an_unwritable_archive_holds_raw_points_back_until_it_catches_up(
    pg15_database_url: str, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    from fieldline.storage.migrate import migrate

    await migrate(pg15_database_url)
    old = (datetime.now(UTC) - timedelta(days=40)).replace(hour=0, minute=0, second=0)
    pool = await open_pool(pg15_database_url, min_size=1, max_size=2)
    try:
        async with pool.connection() as conn:
            await create_devices(conn, "cold-room")
            await store_readings(conn, "cold-room", readings(old, 3, timedelta(minutes=30)))
        down = f"http://127.0.0.1:{free_port('127.0.0.1')}"  # nothing listens
        settings = Settings(
            database_url=pg15_database_url,
            data_dir=tmp_path / "data",
            archive_url=f"s3://{s3_bucket}/archive",
            s3_endpoint_url=down,
        )
        metrics = Metrics()
        worker = Worker(settings=settings, pool=pool, metrics=metrics)
        failed = await worker.run_job("archive")
        assert isinstance(failed, ArchiveRound)
        assert failed.written == [] and failed.pending == 4  # 3 hours and the day
        assert failed.error is not None and f"s3://{s3_bucket}/archive" in failed.error
        assert metrics.archive_failures._value.get() == 1
        assert metrics.archive_pending_files._value.get() == 4
        with psycopg.connect(pg15_database_url) as conn:
            assert conn.execute("SELECT files, error FROM archive_runs").fetchone() == (
                0,
                failed.error,
            )

        # Retention: the day is 40 days old, but the archive does not hold it.
        (raw, *_) = await worker.run_job("retention")
        assert raw.dropped == [] and [p.start for p in raw.held] == [old.date()]
        assert metrics.retention_partitions_held.labels(tier="raw")._value.get() == 1

        # The store is back: the next run writes everything, and retention drops the day.
        settings = settings.model_copy(update={"s3_endpoint_url": s3_server.endpoint_url})
        worker = Worker(settings=settings, pool=pool, metrics=metrics)
        caught_up = await worker.run_job("archive")
        assert len(caught_up.written) == 4 and caught_up.pending == 0
        assert caught_up.error is None and metrics.archive_last_success._value.get() > 0
        (raw, *_) = await worker.run_job("retention")
        assert [p.start for p in raw.dropped] == [old.date()] and raw.held == []
    finally:
        await pool.close()
