"""Recent failed credentials per account, in PostgreSQL so every API process sees them.

Times come from the caller (the API's clock), not from `now()`, so that the rules in
`domain.lockout` decide with one clock and tests can move it.
"""

from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection

from fieldline.domain.lockout import CredentialKind, FailureRecord, LockoutPolicy
from fieldline.storage.db import Row

Conn = AsyncConnection[Row]

# Each failure deletes at most this many expired records: a failure adds at most one,
# so the table holds little more than the records that still mean something.
SWEEP_PER_FAILURE = 10


def _record(row: Row) -> FailureRecord:
    return FailureRecord(
        failures=row["failures"],
        window_started=row["window_started"],
        lockouts=row["lockouts"],
        locked_until=row["locked_until"],
    )


async def get(
    conn: Conn, kind: CredentialKind, account: str, *, now: datetime
) -> FailureRecord | None:
    """The account's live record; None when it has no failures worth remembering."""
    row = await (
        await conn.execute(
            "SELECT failures, window_started, lockouts, locked_until FROM auth_failures"
            " WHERE kind = %s AND account = %s AND expires_at > %s",
            (kind.value, account, now),
        )
    ).fetchone()
    return _record(row) if row else None


async def record_failure(
    conn: Conn,
    kind: CredentialKind,
    account: str,
    *,
    now: datetime,
    policy: LockoutPolicy,
) -> tuple[FailureRecord, FailureRecord]:
    """Count one failure; answer the record before and after it.

    The row is locked while it changes, so concurrent failures from several API
    processes are each counted once and only one of them begins a lock. The sweep
    skips rows others hold, so two failures never wait for each other.
    """
    async with conn.transaction():
        # The upsert locks the row (new or not) until the transaction ends.
        row = await (
            await conn.execute(
                "INSERT INTO auth_failures"
                " (kind, account, failures, window_started, lockouts, expires_at)"
                " VALUES (%s, %s, 0, %s, 0, %s)"
                " ON CONFLICT (kind, account) DO UPDATE SET failures = auth_failures.failures"
                " RETURNING failures, window_started, lockouts, locked_until, expires_at",
                (kind.value, account, now, now),
            )
        ).fetchone()
        assert row is not None
        before = _record(row) if row["expires_at"] > now else FailureRecord.empty(now)
        after = before.after_failure(now, policy)
        await conn.execute(
            "UPDATE auth_failures SET failures = %s, window_started = %s, lockouts = %s,"
            " locked_until = %s, expires_at = %s WHERE kind = %s AND account = %s",
            (
                after.failures,
                after.window_started,
                after.lockouts,
                after.locked_until,
                after.expires_at(policy),
                kind.value,
                account,
            ),
        )
        await conn.execute(
            "DELETE FROM auth_failures WHERE ctid = ANY(ARRAY("
            " SELECT ctid FROM auth_failures WHERE expires_at < %s LIMIT %s"
            " FOR UPDATE SKIP LOCKED))",
            (now, SWEEP_PER_FAILURE),
        )
    return before, after


async def forget(conn: Conn, kind: CredentialKind, account: str) -> None:
    """A success: the account's failures no longer count."""
    await conn.execute(
        "DELETE FROM auth_failures WHERE kind = %s AND account = %s", (kind.value, account)
    )
