"""Storage accounting as a viewer sees it: sizes per tier, the busiest devices, the growth."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from fieldline.archive.run import closed_until
from fieldline.domain.readings import Reading
from fieldline.ops.metrics import Metrics
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from fieldline.worker.service import Worker
from tests.api.conftest import Api
from tests.conftest import create_devices


async def test_storage_shows_tiers_the_busiest_devices_and_when_the_disk_fills(api: Api) -> None:
    viewer = await api.user("viewer")
    first = await api.http.get("/api/v1/storage", headers=viewer)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["database_bytes"] > 0
    assert [t["tier"] for t in body["tiers"]] == ["raw", "hourly", "daily"]
    assert [t["retention_days"] for t in body["tiers"]] == [30, 400, 0]
    assert body["top_devices"] is None  # the worker has not measured yet
    assert body["disk"] is None and body["days_until_full"] is None
    assert "external server" in body["why_no_estimate"]

    now = datetime.now(UTC).replace(microsecond=0)
    async with api.pool.connection() as conn:
        await create_devices(conn, "busy", "quiet")

        def readings(count: int) -> list[Reading]:
            return [
                Reading(
                    message_id=f"m{i}",
                    time=now - timedelta(seconds=i),
                    metrics={"temperature": 20.0, "humidity": 50.0},
                    attributes={},
                )
                for i in range(count)
            ]

        batch = Batch(
            telemetry=[
                DeviceReadings("busy", now, readings(30)),
                DeviceReadings("quiet", now, readings(3)),
            ]
        )
        await write_batch(conn, batch, PartitionCache())  # type: ignore[arg-type]

    metrics = Metrics()
    worker = Worker(settings=api.context.settings, pool=api.pool, metrics=metrics)
    assert await worker.run_job("retention") is not None
    assert await worker.run_job("storage_accounting") is not None

    body = (await api.http.get("/api/v1/storage", headers=viewer)).json()
    assert body["top_devices"]["devices"] == [
        {"device_id": "busy", "points": 60},
        {"device_id": "quiet", "points": 6},
    ]
    raw = body["tiers"][0]
    assert raw["bytes"] > 0 and raw["partitions"] >= 1
    assert raw["oldest"] <= raw["newest"] == now.date().isoformat()  # none ahead of today
    assert raw["last_retention"]["dropped"] == []
    assert body["growth_bytes_per_day"] is None  # one snapshot, taken just now
    assert metrics.database_bytes._value.get() > 0
    assert metrics.storage_tier_bytes.labels(tier="raw")._value.get() == raw["bytes"]
    assert math.isnan(metrics.disk_free_bytes._value.get())  # an external server

    # A measurement of a day ago, a megabyte smaller: the database grows about 1 MB a day.
    async with api.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO storage_snapshots (taken_at, database_bytes, since, top_devices)"
            " VALUES (%s, %s, NULL, '[]')",
            (now - timedelta(days=1), body["database_bytes"] - 1_000_000),
        )
    body = (await api.http.get("/api/v1/storage", headers=viewer)).json()
    assert 0.9e6 < body["growth_bytes_per_day"] < 1.1e6

    # The embedded database: fieldline sees its disk and says when it fills.
    (api.context.settings.data_dir / "postgres").mkdir()
    api.reconfigure(database_url=None)
    body = (await api.http.get("/api/v1/storage", headers=viewer)).json()
    assert body["disk"]["free_bytes"] > 0
    assert body["days_until_full"] == body["disk"]["free_bytes"] / body["growth_bytes_per_day"]
    assert body["why_no_estimate"] is None

    assert (await api.http.get("/api/v1/storage")).status_code == 401


async def test_storage_shows_what_the_archive_holds_and_its_last_run(api: Api) -> None:
    viewer = await api.user("viewer")
    body = (await api.http.get("/api/v1/storage", headers=viewer)).json()
    assert body["archive"] is None  # FIELDLINE_ARCHIVE_URL not set

    archive_dir = api.context.settings.data_dir.parent / "archive"
    api.reconfigure(archive_url=str(archive_dir))
    body = (await api.http.get("/api/v1/storage", headers=viewer)).json()
    assert body["archive"] == {
        "location": str(archive_dir),
        "hours": 0,
        "days": 0,
        "points": 0,
        "bytes": 0,
        "oldest_hour": None,
        "newest_hour": None,
        "last_run": None,
    }

    now = datetime.now(UTC)
    hour = (now - timedelta(hours=4)).replace(minute=0, second=0, microsecond=0)
    # Just after midnight, yesterday is a closed day with points: its aggregates go too.
    days = 1 if hour.date() < closed_until(now).date() else 0
    async with api.pool.connection() as conn:
        await create_devices(conn, "silo")
        readings = [
            Reading(
                message_id=f"m{i}",
                time=hour + timedelta(minutes=i * 60 + 10),
                metrics={"level": float(i)},
                attributes={},
            )
            for i in range(3)  # in the hour, the next, and the one after
        ]
        batch = Batch(telemetry=[DeviceReadings("silo", hour, readings)])
        await write_batch(conn, batch, PartitionCache())  # type: ignore[arg-type]
    worker = Worker(settings=api.context.settings, pool=api.pool, metrics=Metrics())
    done = await worker.run_job("archive")
    assert done is not None and len(done.written) == 3 + days and done.error is None

    archived = (await api.http.get("/api/v1/storage", headers=viewer)).json()["archive"]
    assert (archived["hours"], archived["days"], archived["points"]) == (3, days, 3)
    assert archived["bytes"] == sum(f.bytes for f in done.written) > 0
    assert archived["oldest_hour"] == hour.isoformat().replace("+00:00", "Z")
    assert archived["newest_hour"] == (hour + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    assert archived["last_run"]["files"] == 3 + days and archived["last_run"]["error"] is None


async def test_storage_shows_the_last_backup_and_the_last_verified_restore(api: Api) -> None:
    """Backups as the worker or `fieldline backup` record them: the newest to the configured
    location, and the newest verification; a failed one does not hide the last success."""
    from fieldline.backup.create import create
    from fieldline.backup.verify import verify
    from fieldline.blobs.local import LocalStore

    viewer = await api.user("viewer")
    location = api.context.settings.data_dir / "backups"  # the default: <data_dir>/backups
    body = (await api.http.get("/api/v1/storage", headers=viewer)).json()
    assert body["backups"] == {
        "location": str(location),
        "last_backup": None,
        "last_verification": None,
        "last_verified_at": None,
    }

    store = LocalStore(location)
    made = (await create(api.url, api.context.settings.data_dir, store)).manifest
    passed = await verify(api.url, store)
    assert passed.ok
    backups = (await api.http.get("/api/v1/storage", headers=viewer)).json()["backups"]
    assert backups["last_backup"]["id"] == made.id
    assert backups["last_backup"]["bytes"] == made.size > 0
    assert backups["last_verification"]["ok"] is True
    assert backups["last_verification"]["backup_id"] == made.id
    verified_at = backups["last_verified_at"]
    assert verified_at == backups["last_verification"]["verified_at"]

    dump_file = location / made.id / "database.dump"
    dump_file.write_bytes(dump_file.read_bytes()[:-1] + b"?")
    assert not (await verify(api.url, store)).ok
    backups = (await api.http.get("/api/v1/storage", headers=viewer)).json()["backups"]
    assert backups["last_verification"]["ok"] is False
    assert "database.dump is corrupted" in backups["last_verification"]["problem"]
    assert backups["last_verified_at"] == verified_at
