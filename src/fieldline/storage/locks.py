"""The worker jobs' advisory locks: how several workers share the jobs without doing one twice.

A job takes its lock inside each transaction it runs; a second worker that finds
the lock held skips the job this round instead of waiting for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from enum import IntEnum

from psycopg import AsyncConnection

from fieldline.storage.db import Row


class JobLock(IntEnum):
    """One advisory lock key per job, within fieldline's own key space."""

    PARTITIONS = 0x666C_0001
    FORGET_MESSAGE_IDS = 0x666C_0002
    SILENT_OFFLINE = 0x666C_0003
    FORGET_PROVISIONING_SIGNATURES = 0x666C_0005
    FORGET_REJECTED_MESSAGES = 0x666C_0006
    FORGET_INGEST_ACTIVITY = 0x666C_0007
    RETENTION = 0x666C_0008
    STORAGE_ACCOUNTING = 0x666C_0009
    ARCHIVE = 0x666C_000A
    BACKUP = 0x666C_000B
    BACKUP_VERIFY = 0x666C_000C
    COMMAND_DISPATCH = 0x666C_0107
    ALERT_EVALUATE = 0x666C_0201
    NOTIFY_DISPATCH = 0x666C_0301
    ROLLOUTS = 0x666C_0401
    HEALTH = 0x666C_0501


async def try_job_lock(conn: AsyncConnection[Row], lock: JobLock) -> bool:
    """Inside a transaction: hold `lock` until it ends; False when another worker holds it."""
    cursor = await conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS got", (int(lock),))
    row = await cursor.fetchone()
    return bool(row and row["got"])


@contextlib.asynccontextmanager
async def session_job_lock(conn: AsyncConnection[Row], lock: JobLock) -> AsyncIterator[bool]:
    """Outside a transaction: hold `lock` for the block, whether it was got.

    For a job that must not hold a transaction open while it waits on the network (the
    notification dispatcher): the lock lives on the connection, not in a transaction,
    and ends with the connection if the process dies.
    """
    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (int(lock),))
    row = await cursor.fetchone()
    got = bool(row and row["got"])
    try:
        yield got
    finally:
        if got:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (int(lock),))
