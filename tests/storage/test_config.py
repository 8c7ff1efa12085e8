"""Desired configuration storage on both PostgreSQL servers: reported versions, concurrent
changes, and deleting what configurations hang on."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from fieldline.domain.config import effective, same_document
from fieldline.domain.devices import ConnectionStatus
from fieldline.storage import config as config_store
from fieldline.storage import devices as device_store
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.errors import AlreadyExistsError, NotFoundError
from fieldline.storage.migrate import available_migrations, migrate
from fieldline.storage.writer import Batch, PartitionCache, Presence, write_batch

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DEVICES = [f"dev-{i}" for i in range(6)]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    await migrate(database_url)
    pool = await open_pool(database_url, min_size=1, max_size=12)
    async with pool.connection() as conn:
        for name in ("north", "south"):
            await device_store.create_group(conn, name=name)
        for index, device_id in enumerate(DEVICES):
            await device_store.create_device(
                conn,
                device_id=device_id,
                name="",
                device_type="",
                group="north" if index % 2 else "south",
                metadata={},
                secret_hash="x",
            )
    yield pool
    await pool.close()


async def write(database_url: str, presence: list[Presence]) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await write_batch(conn, Batch(presence=presence), PartitionCache())


async def test_the_newest_report_of_an_applied_version_wins(database_url: str, pool: Pool) -> None:
    online = ConnectionStatus.ONLINE
    later = T0 + timedelta(seconds=5)
    await write(
        database_url,
        [
            Presence("dev-0", T0, online, config_version=3),
            Presence("dev-0", later, online, config_version=4),
            Presence("dev-1", T0, online, config_version=2),
        ],
    )
    # A late delivery of an older status, and messages that say nothing about it.
    await write(
        database_url,
        [Presence("dev-0", T0, online, config_version=1), Presence("dev-1", later, online)],
    )
    async with pool.connection() as conn:
        zero = await config_store.get_device_config(conn, "dev-0")
        one = await config_store.get_device_config(conn, "dev-1")
    assert (zero.reported_version, zero.reported_at) == (4, later)
    assert (one.reported_version, one.reported_at) == (2, T0)


async def test_concurrent_changes_end_consistent_and_versions_only_grow(pool: Pool) -> None:
    rng = random.Random(7)

    async def change(step: int) -> None:
        async with pool.connection() as conn:
            kind = rng.choice(["group", "device", "move", "follow", "publish", "recreate"])
            device_id = rng.choice(DEVICES)
            group = rng.choice(["north", "south"])
            if kind == "group":
                await config_store.set_group_config(
                    conn, group, {"g": step, "n": {"x": step}}, actor="t"
                )
            elif kind == "device":
                with contextlib.suppress(NotFoundError):  # deleted meanwhile
                    await config_store.set_device_config(
                        conn, device_id, {"n": {"y": step}}, actor="t"
                    )
            elif kind == "move":
                with contextlib.suppress(NotFoundError):
                    await device_store.update_device(conn, device_id, {"group": group})
                await config_store.follow_groups(conn, actor="t", device_ids=[device_id])
            elif kind == "follow":
                await config_store.follow_groups(conn, actor="t")
            elif kind == "publish":
                async with conn.transaction():
                    batch = await config_store.lock_deliverable(
                        conn, device_ids=None, everything=False, after=None, limit=100
                    )
                    await asyncio.sleep(0.01)  # as if publishing
                    await config_store.mark_published(conn, batch)
            else:
                with contextlib.suppress(NotFoundError):
                    await device_store.delete_device(conn, device_id)
                with contextlib.suppress(AlreadyExistsError):
                    await device_store.create_device(
                        conn,
                        device_id=device_id,
                        name="",
                        device_type="",
                        group=group,
                        metadata={},
                        secret_hash="x",
                    )
                await config_store.follow_groups(conn, actor="t", device_ids=[device_id])

    await asyncio.gather(*(change(step) for step in range(80)))
    async with pool.connection() as conn:
        # Whatever raced, one round of the worker's catch-up leaves every device consistent.
        await config_store.follow_groups(conn, actor="t")
        for device_id in DEVICES:
            state = await config_store.get_device_config(conn, device_id)
            assert state.effective == effective(state.group_config, state.own)
            page = await config_store.device_history(conn, device_id, limit=1000, cursor=None)
            versions = [c.version for c in reversed(page.items) if c.version is not None]
            assert versions == list(range(1, state.version + 1))


async def test_groups_and_devices_with_configurations_can_be_deleted(pool: Pool) -> None:
    async with pool.connection() as conn:
        await config_store.set_group_config(conn, "north", {"a": 1}, actor="t")
        await config_store.set_device_config(conn, "dev-1", {"b": 2}, actor="t")
        await device_store.delete_device(conn, "dev-1")
        for device_id in ("dev-3", "dev-5"):
            await device_store.update_device(conn, device_id, {"group": None})
        await conn.execute("DELETE FROM groups WHERE name = 'north'")
        moved = await config_store.follow_groups(conn, actor="t")
        assert sorted(v.device_id for v in moved) == ["dev-3", "dev-5"]
        state = await config_store.get_device_config(conn, "dev-3")
        assert (state.group, state.effective, state.version) == (None, {}, 2)
        left = await (await conn.execute("SELECT count(*) AS n FROM device_configs")).fetchone()
        assert left is not None and left["n"] == 2


async def test_documents_stored_as_jsonb_keep_working_after_the_upgrade(database_url: str) -> None:
    """Migration 0015 moves documents from jsonb to json text. A number jsonb had already
    rewritten as an integer beyond 64 bits (a float sent as 1.5e300, stored by a group
    configuration PUT before) becomes that float again, so the group's devices get it."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in available_migrations():
            if migration.version < 15:
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
        old = '{"huge": 1.5e300, "e19": 1e19, "ratio": 0.25, "n": 7, "s": "a\\"b", "l": [1, null]}'
        await conn.execute("INSERT INTO groups (name) VALUES ('old-site')")
        await conn.execute(
            "INSERT INTO group_configs (group_id, config, version)"
            " SELECT id, %s::jsonb, 1 FROM groups",
            (old,),
        )
        await conn.execute(
            "INSERT INTO devices (device_id, metadata) VALUES ('old-1', %s::jsonb)", (old,)
        )
    await migrate(database_url)

    pool = await open_pool(database_url, min_size=1, max_size=2)
    try:
        async with pool.connection() as conn:
            upgraded = {
                "huge": 1.5e300,
                "e19": 1e19,
                "ratio": 0.25,
                "n": 7,
                "s": 'a"b',
                "l": [1, None],
            }
            group = await config_store.get_group_config(conn, "old-site")
            assert same_document(group.config, upgraded)  # 1e19 a float again, too
            assert same_document((await device_store.get_device(conn, "old-1")).metadata, upgraded)
            await device_store.create_device(
                conn,
                device_id="new-1",
                name="",
                device_type="",
                group="old-site",
                metadata={},
                secret_hash="x",
            )
            [joined] = await config_store.follow_groups(conn, actor="test", device_ids=["new-1"])
            assert joined.version == 1
            state = await config_store.get_device_config(conn, "new-1")
            assert same_document(state.effective, upgraded)
    finally:
        await pool.close()
