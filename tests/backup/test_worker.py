"""The worker's backup jobs in process: a backup, the old ones pruned by the keep rule,
the new one verified, and the metrics that show both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from fieldline.backup import stored
from fieldline.backup.manifest import DUMP, MANIFEST
from fieldline.blobs.local import LocalStore
from fieldline.config import Settings
from fieldline.ops.metrics import Metrics
from fieldline.storage.db import open_pool
from fieldline.worker.backup import BackupRound, VerifyRound
from fieldline.worker.service import Worker
from tests.backup.conftest import data_dir, seed


async def test_a_backup_prunes_what_the_keep_rule_does_not_keep_and_is_verified(
    pg15_database_url: str, tmp_path: Path
) -> None:
    await seed(pg15_database_url, days=1)
    with psycopg.connect(pg15_database_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET applied_at = applied_at - interval '30 days'")
    store = LocalStore(tmp_path / "backups")
    now = datetime.now(UTC)
    earlier = {days: stored.new_id(now - timedelta(days=days)) for days in (3, 4, 10, 20)}
    for backup_id in earlier.values():
        store.put_bytes(f"{backup_id}/{MANIFEST}", b"{}")
    unfinished = stored.new_id(now - timedelta(days=5))
    store.put_bytes(f"{unfinished}/{DUMP}", b"cut short")

    settings = Settings(
        database_url=pg15_database_url,
        data_dir=data_dir(tmp_path / "data"),
        backup_url=str(store.root),
        backup_keep_daily=2,
        backup_keep_weekly=1,
    )
    metrics = Metrics()
    pool = await open_pool(pg15_database_url, min_size=1, max_size=2)
    try:
        worker = Worker(settings=settings, pool=pool, metrics=metrics)
        done = await worker.run_job("backup")
        assert isinstance(done, BackupRound) and done.created is not None
        made = done.created.manifest
        # Kept: today's (new), then 3 days ago (the second day), then the newest of the
        # weeks before (4 days ago); the rest go, and the backup that never finished.
        assert sorted(done.pruned) == sorted([earlier[10], earlier[20], unfinished])
        assert [b.id for b in stored.listed(store)] == [earlier[4], earlier[3], made.id]
        assert metrics.backup_bytes._value.get() == made.size
        assert abs(metrics.backup_last_success._value.get() - now.timestamp()) < 600
        assert metrics.backup_last_verified._value.get() == 0  # never, yet

        checked = await worker.run_job("backup_verify")
        assert isinstance(checked, VerifyRound) and checked.verification is not None
        assert checked.verification.ok and checked.verification.manifest.id == made.id
        assert metrics.backup_last_verified._value.get() > now.timestamp()
        assert metrics.backup_failures.labels(step="verify")._value.get() == 0

        # A restarted worker: nothing due, and the metrics read back from the database.
        fresh = Metrics()
        restarted = Worker(settings=settings, pool=pool, metrics=fresh)
        again = await restarted.run_job("backup")
        assert isinstance(again, BackupRound) and again.created is None
        assert again.due_at is not None and again.due_at > now + timedelta(hours=23)
        assert fresh.backup_bytes._value.get() == made.size
        await restarted.run_job("backup_verify")
        assert fresh.backup_last_verified._value.get() > now.timestamp()
    finally:
        await pool.close()


async def test_a_store_that_cannot_be_written_counts_a_failure(
    pg15_database_url: str, tmp_path: Path
) -> None:
    await seed(pg15_database_url, days=1)
    with psycopg.connect(pg15_database_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET applied_at = applied_at - interval '2 days'")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    settings = Settings(
        database_url=pg15_database_url, data_dir=tmp_path, backup_url=str(blocked / "backups")
    )
    metrics = Metrics()
    pool = await open_pool(pg15_database_url, min_size=1, max_size=2)
    try:
        worker = Worker(settings=settings, pool=pool, metrics=metrics)
        assert await worker.run_job("backup") is None  # failed: logged, counted
        assert metrics.backup_failures.labels(step="backup")._value.get() == 1
        assert metrics.backup_last_success._value.get() == 0
    finally:
        await pool.close()
