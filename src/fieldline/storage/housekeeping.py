"""The worker's periodic jobs, each safe to run from several workers at once.

Each job takes its transaction-scoped advisory lock (`locks.JobLock`) first: a
second worker running the same job at the same moment skips it instead of doing
it twice.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from psycopg import AsyncConnection

from fieldline.storage import partitions
from fieldline.storage.db import Row
from fieldline.storage.locks import JobLock, try_job_lock

DELETE_CHUNK = 50_000  # ledger rows forgotten per statement, so no job holds locks for long


async def create_partitions_ahead(conn: AsyncConnection[Row], today: date, days: int) -> int | None:
    """Every tier's partitions for today and the next `days`, so midnight (and the first
    of a month or year) costs ingest no DDL."""
    async with conn.transaction():
        if not await try_job_lock(conn, JobLock.PARTITIONS):
            return None
        await partitions.create_for_days(
            conn, [today + timedelta(days=offset) for offset in range(days + 1)]
        )
    return days + 1


async def forget_message_ids(conn: AsyncConnection[Row], received_before: datetime) -> int | None:
    """Drop ledger entries older than the de-duplication window; answer how many."""
    return await _delete_older(
        conn, JobLock.FORGET_MESSAGE_IDS, "message_ledger", "received_at", received_before
    )


async def forget_rejected_messages(
    conn: AsyncConnection[Row], received_before: datetime
) -> int | None:
    """Drop rejected messages older than their retention; answer how many."""
    return await _delete_older(
        conn, JobLock.FORGET_REJECTED_MESSAGES, "rejected_messages", "received_at", received_before
    )


async def forget_ingest_activity(conn: AsyncConnection[Row], before: datetime) -> int | None:
    """Drop the dashboard's ingest counts older than `before`; answer how many rows."""
    return await _delete_older(
        conn, JobLock.FORGET_INGEST_ACTIVITY, "ingest_activity", "bucket", before
    )


async def _delete_older(
    conn: AsyncConnection[Row], job: JobLock, table: str, column: str, before: datetime
) -> int | None:
    """Delete rows with `column` before `before`, in chunks so no statement holds locks long.

    None when another worker holds the job. `table` and `column` are this module's own
    constants, never input.
    """
    deleted_in_all = 0
    statement = (
        f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
        f" SELECT ctid FROM {table} WHERE {column} < %s LIMIT %s))"
    )
    while True:
        async with conn.transaction():
            if not await try_job_lock(conn, job):
                return None if deleted_in_all == 0 else deleted_in_all
            cursor = await conn.execute(statement.encode(), (before, DELETE_CHUNK))
            deleted = cursor.rowcount
        deleted_in_all += deleted
        if deleted < DELETE_CHUNK:
            return deleted_in_all


async def mark_silent_offline(
    conn: AsyncConnection[Row], silent_since: datetime, now: datetime
) -> list[str] | None:
    """Devices shown online but not heard from since `silent_since` become offline.

    Each gets a status event (`offline`, detail `{"reason": "timeout"}`) so the
    status history shows when and why, like a last will would.
    """
    async with conn.transaction():
        if not await try_job_lock(conn, JobLock.SILENT_OFFLINE):
            return None
        cursor = await conn.execute(
            "UPDATE devices SET status = 'offline' "
            "WHERE status = 'online' AND (last_seen IS NULL OR last_seen < %s) "
            "RETURNING device_id",
            (silent_since,),
        )
        devices = sorted(str(row["device_id"]) for row in await cursor.fetchall())
        if devices:
            await conn.execute(
                "INSERT INTO device_status_events (device_id, time, status, detail) "
                "SELECT d, %s, 'offline', '{\"reason\": \"timeout\"}'::jsonb "
                "FROM unnest(%s::text[]) AS d",
                (now, devices),
            )
    return devices


async def forget_provisioning_signatures(
    conn: AsyncConnection[Row], signed_before: datetime
) -> int | None:
    """Forget used provisioning signatures whose requests are too old to be accepted anyway."""
    async with conn.transaction():
        if not await try_job_lock(conn, JobLock.FORGET_PROVISIONING_SIGNATURES):
            return None
        cursor = await conn.execute(
            "DELETE FROM provisioning_signatures WHERE signed_at < %s", (signed_before,)
        )
        return cursor.rowcount
