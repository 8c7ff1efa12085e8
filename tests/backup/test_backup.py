"""Backups against real PostgreSQL (Debian's 15 and the embedded 18) and a real S3 server:
taken while ingest writes, verified by a restore, refused over data, and corrupt ones
caught."""

from __future__ import annotations

import asyncio
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from fieldline.backup import stored
from fieldline.backup.create import create
from fieldline.backup.manifest import DUMP, MANIFEST
from fieldline.backup.restore import RestoreRefused, restore
from fieldline.backup.verify import verify
from fieldline.blobs.local import LocalStore
from fieldline.blobs.open import open_store
from fieldline.domain.readings import Reading
from fieldline.storage import backups
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.backup.conftest import data_dir, seed
from tests.conftest import PgServer, S3Server


async def count(url: str, table: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone()
    assert row is not None
    return int(row[0])


async def keep_ingesting(url: str, stop: asyncio.Event, wrote: asyncio.Event) -> int:
    """Store a reading every few milliseconds until `stop`, as ingest would, setting `wrote`
    after each; answer how many."""
    written = 0
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:
        cache = PartitionCache()
        while not stop.is_set():
            now = datetime.now(UTC)
            reading = Reading(
                message_id=f"live-{written}", time=now, metrics={"temperature": 5.0}, attributes={}
            )
            batch = Batch(telemetry=[DeviceReadings("truck-7", now, [reading])])
            await write_batch(conn, batch, cache)  # type: ignore[arg-type]
            written += 1
            wrote.set()
            await asyncio.sleep(0.002)
    return written


async def test_a_backup_taken_while_ingest_writes_verifies_and_restores(
    database_url: str, pg_server: PgServer, tmp_path: Path
) -> None:
    """The manifest describes exactly what was dumped although rows arrive meanwhile: its
    counts fall between the rows before and after, and the restore matches them all."""
    points = await seed(database_url)
    store = open_store(str(tmp_path / "backups"))
    before = await count(database_url, "telemetry")
    stop, wrote = asyncio.Event(), asyncio.Event()
    writer = asyncio.create_task(keep_ingesting(database_url, stop, wrote))
    await wrote.wait()
    try:
        made = await create(database_url, data_dir(tmp_path / "data"), store)
        wrote.clear()
        await wrote.wait()  # and one more after the backup
    finally:
        stop.set()
        written = await writer
    after = await count(database_url, "telemetry")
    dumped = sum(t.rows for t in made.manifest.tables if t.table.startswith("public.telemetry_p"))
    assert before == points
    assert before < dumped < after == points + written  # rows came before and after it

    tables = [t.table for t in made.manifest.tables]
    assert "public.devices" in tables and "public.users" in tables
    assert "public.telemetry" not in tables  # a partitioned parent holds no rows itself
    assert sum(t.startswith("public.telemetry_p") for t in tables) >= 4  # every day's partition
    assert made.manifest.data_files == ("secrets/secret_key", "certs/ca.crt", "certs/ca.key")

    # Private on disk: the backup holds the instance's secrets.
    folder = tmp_path / "backups" / made.manifest.id
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700  # made by the backup
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}

    checked = await verify(database_url, store)
    assert (checked.ok, checked.problems) == (True, [])
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        verified = await backups.last_verification(conn)
        taken = await backups.last_backup(conn)
        leftovers = await (
            await conn.execute("SELECT datname FROM pg_database WHERE datname LIKE '%verify%'")
        ).fetchall()
    assert verified is not None and (verified.backup_id, verified.ok) == (made.manifest.id, True)
    assert taken is not None and (taken.id, taken.bytes) == (made.manifest.id, made.manifest.size)
    assert leftovers == []  # the scratch database is gone

    # Restored into a new database and data directory: the same rows, the same secrets.
    target = pg_server.create_database()
    try:
        target_url = pg_server.url_for(target)
        new_dir = tmp_path / "new-data"
        done = await restore(target_url, new_dir, store, None)
        assert done.manifest.id == made.manifest.id
        for table in ("devices", "users", "telemetry", "telemetry_hourly", "telemetry_daily"):
            async with await psycopg.AsyncConnection.connect(target_url) as conn:
                cursor = await conn.execute(f"SELECT count(*) FROM {table}")
                assert await cursor.fetchone() == (
                    sum(
                        t.rows
                        for t in made.manifest.tables
                        if t.table == f"public.{table}" or t.table.startswith(f"public.{table}_p")
                    ),
                )
        assert (new_dir / "secrets" / "secret_key").read_text() == "the-api-signing-key\n"
        assert stat.S_IMODE((new_dir / "certs" / "ca.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((new_dir / "secrets").stat().st_mode) == 0o700

        # Not over data, unless told.
        with pytest.raises(RestoreRefused, match=r"the database is not empty.*--force"):
            await restore(target_url, tmp_path / "third", store, None)
        (new_dir / "secrets" / "secret_key").write_text("another key\n")
        with pytest.raises(RestoreRefused, match=r"already holds other secrets/secret_key"):
            await restore(pg_server.url_for(pg_server.create_database()), new_dir, store, None)
        await restore(target_url, new_dir, store, made.manifest.id, force=True)
        assert await count(target_url, "telemetry") == dumped
        assert (new_dir / "secrets" / "secret_key").read_text() == "the-api-signing-key\n"
    finally:
        pg_server.drop_database(target)


async def test_a_flipped_byte_fails_verification_and_is_recorded(
    pg15_database_url: str, tmp_path: Path
) -> None:
    await seed(pg15_database_url, days=1)
    store = LocalStore(tmp_path / "backups")
    made = await create(pg15_database_url, data_dir(tmp_path / "data"), store)
    dump_file = tmp_path / "backups" / made.manifest.id / DUMP
    content = bytearray(dump_file.read_bytes())
    content[len(content) // 2] ^= 0x01
    dump_file.write_bytes(bytes(content))

    checked = await verify(pg15_database_url, store, made.manifest.id)
    assert not checked.ok
    (problem,) = checked.problems
    assert f"{made.manifest.id}/{DUMP} is corrupted: its sha256 is" in problem
    async with await psycopg.AsyncConnection.connect(pg15_database_url) as conn:
        last = await backups.last_verification(conn)
    assert last is not None and (last.ok, last.problem) == (False, problem)


async def test_rows_that_differ_from_the_manifest_fail_verification(
    pg15_database_url: str, tmp_path: Path
) -> None:
    """An intact dump whose rows are not those the manifest counted (here: the manifest
    says otherwise) fails on the table that differs, not on a file hash."""
    await seed(pg15_database_url, days=1)
    store = LocalStore(tmp_path / "backups")
    made = await create(pg15_database_url, data_dir(tmp_path / "data"), store)
    manifest_file = tmp_path / "backups" / made.manifest.id / MANIFEST
    body = json.loads(manifest_file.read_text())
    users = next(t for t in body["tables"] if t["table"] == "public.users")
    users["checksum"] = str(int(users["checksum"]) + 1)
    devices = next(t for t in body["tables"] if t["table"] == "public.devices")
    devices["rows"] += 1
    manifest_file.write_text(json.dumps(body))

    checked = await verify(pg15_database_url, store)
    assert checked.problems == [
        "public.devices: 3 rows, the manifest says 4",
        "public.users: checksum differs (1 rows)",
    ]


async def test_backups_go_to_s3_and_restore_from_it(
    pg15: PgServer, pg15_database_url: str, s3_bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    await seed(pg15_database_url, days=1)
    store = open_store(f"s3://{s3_bucket}/fieldline", s3_endpoint_url=s3_server.endpoint_url)
    made = await create(pg15_database_url, data_dir(tmp_path / "data"), store)
    assert [(b.id, b.complete) for b in stored.listed(store)] == [(made.manifest.id, True)]
    assert (await verify(pg15_database_url, store)).ok

    target = pg15.create_database()
    try:
        await restore(pg15.url_for(target), tmp_path / "new", store, None)
        assert await count(pg15.url_for(target), "telemetry") == await count(
            pg15_database_url, "telemetry"
        )
    finally:
        pg15.drop_database(target)


def test_an_unfinished_backup_is_not_listed_as_complete(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    moment = datetime(2026, 12, 7, 3, 0, 1, 250000, tzinfo=UTC)
    name = stored.new_id(moment)
    assert name == "fieldline-20261207T030001.250Z"
    assert stored.taken_at(name) == moment
    store.put_bytes(f"{name}/{DUMP}", b"half a dump")
    store.put_bytes("notes.txt", b"not a backup")
    (listed,) = stored.listed(store)
    assert (listed.id, listed.complete, listed.bytes) == (name, False, 11)
    with pytest.raises(stored.BackupNotFound, match="no backup in"):
        stored.manifest(store)
    later = stored.new_id(moment + timedelta(seconds=1))
    with pytest.raises(stored.BackupNotFound, match=f"no complete backup {later}"):
        stored.manifest(store, later)
