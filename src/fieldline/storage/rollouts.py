"""Rollouts and their devices (migration 0023): what the API reads and changes.

The rounds that move a rollout along (who is in, who is told, who finished) are the
worker's (ota/engine.py); progress reports are applied by ingest's writer
(`apply_progress`), in the transaction that stores the rest of its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from fieldline.storage.db import Row
from fieldline.storage.errors import NotFoundError
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]

ACTIVE = ("running", "paused")
# A device's update is under way in these states: it may fetch the image.
OPEN = ("notified", "downloading", "downloaded", "installing", "installed", "verifying")
FAILURES = ("failed", "rolled_back", "timed_out")
FINISHED = ("succeeded", *FAILURES)
TERMINAL = (*FINISHED, "skipped", "cancelled")
DEVICE_STATES = ("pending", *OPEN, *TERMINAL)


@dataclass(frozen=True, slots=True)
class OpenUpdate:
    rollout_id: int
    firmware_id: int
    state: str
    required: bool
    allow_downgrade: bool


async def open_update(
    conn: Conn, device_id: str, firmware_id: int | None = None, *, waiting: bool = False
) -> OpenUpdate | None:
    """The update under way for this device (of this image), in a rollout not stopped;
    with `waiting`, also one the device is in for but not yet told of (the pace)."""
    row = await (
        await conn.execute(
            "SELECT r.id AS rollout_id, r.firmware_id, rd.state, r.required, r.allow_downgrade"
            " FROM rollout_devices rd JOIN rollouts r ON r.id = rd.rollout_id"
            " WHERE rd.device_id = %(device)s AND rd.state = ANY(%(open)s)"
            " AND r.state = ANY(%(active)s)"
            " AND (%(firmware)s::bigint IS NULL OR r.firmware_id = %(firmware)s)"
            " ORDER BY rd.notified_at DESC NULLS LAST LIMIT 1",
            {
                "device": device_id,
                "open": ["pending", *OPEN] if waiting else list(OPEN),
                "active": list(ACTIVE),
                "firmware": firmware_id,
            },
        )
    ).fetchone()
    return OpenUpdate(**row) if row is not None else None


@dataclass(frozen=True, slots=True)
class Grant:
    """What decides whether a device may have an image: its model, the image, its update."""

    device_type: str
    firmware: dict[str, Any] | None  # the firmware row; None: no such image
    update: OpenUpdate | None


async def grant(conn: Conn, device_id: str, device_model: str, version: str) -> Grant | None:
    """One query for a device's every download request (a resumed download makes many);
    None when the device does not exist."""
    row = await (
        await conn.execute(
            "SELECT d.device_type, to_jsonb(f) AS firmware, u.rollout_id, u.state,"
            " u.required, u.allow_downgrade"
            " FROM devices d"
            " LEFT JOIN firmware f ON f.device_model = %(model)s AND f.version = %(version)s"
            " LEFT JOIN LATERAL (SELECT r.id AS rollout_id, rd.state, r.required,"
            "  r.allow_downgrade FROM rollout_devices rd JOIN rollouts r ON r.id = rd.rollout_id"
            "  WHERE rd.device_id = d.device_id AND r.firmware_id = f.id"
            "  AND rd.state = ANY(%(open)s) AND r.state = ANY(%(active)s)"
            "  ORDER BY rd.notified_at DESC NULLS LAST LIMIT 1) u ON true"
            " WHERE d.device_id = %(device)s",
            {
                "model": device_model,
                "version": version,
                "device": device_id,
                "open": list(OPEN),
                "active": list(ACTIVE),
            },
        )
    ).fetchone()
    if row is None:
        return None
    firmware = row["firmware"]
    update = (
        OpenUpdate(
            row["rollout_id"], firmware["id"], row["state"], row["required"], row["allow_downgrade"]
        )
        if row["rollout_id"] is not None
        else None
    )
    return Grant(row["device_type"], firmware, update)


async def create(
    conn: Conn,
    *,
    firmware_id: int,
    group_ids: Sequence[int],
    device_ids: Sequence[str],
    stages: list[dict[str, Any]],
    max_per_minute: int,
    device_timeout_seconds: int,
    settle_seconds: int,
    abort_min_finished: int,
    abort_failure_percent: float,
    allow_downgrade: bool,
    required: bool,
    created_by: str,
) -> int:
    cursor = await conn.execute(
        "INSERT INTO rollouts (firmware_id, target_groups, target_devices, stages,"
        " max_per_minute, device_timeout_seconds, settle_seconds, abort_min_finished,"
        " abort_failure_percent, allow_downgrade, required, created_by)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            firmware_id,
            list(group_ids),
            list(device_ids),
            Jsonb(stages),
            max_per_minute,
            device_timeout_seconds,
            settle_seconds,
            abort_min_finished,
            abort_failure_percent,
            allow_downgrade,
            required,
            created_by,
        ),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["id"])


_SELECT = (
    "SELECT r.*, f.device_model, f.version,"
    " coalesce((SELECT array_agg(g.name ORDER BY g.name) FROM groups g"
    "  WHERE g.id = ANY(r.target_groups)), '{}') AS group_names"
    " FROM rollouts r JOIN firmware f ON f.id = r.firmware_id"
)


async def get(conn: Conn, rollout_id: int, *, lock: bool = False) -> dict[str, Any]:
    row = await (
        await conn.execute(
            _SELECT + " WHERE r.id = %s" + (" FOR UPDATE OF r" if lock else ""), (rollout_id,)
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"rollout {rollout_id} does not exist")
    return dict(row)


async def list_rollouts(
    conn: Conn, state: str | None, *, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    """Rollouts (in one state, or all), newest first, a page at a time."""
    after = decode_cursor(cursor, 1)
    cursor_rows = await conn.execute(
        _SELECT + " WHERE (%(state)s::text IS NULL OR r.state = %(state)s)"
        " AND (%(after)s::bigint IS NULL OR r.id < %(after)s) ORDER BY r.id DESC LIMIT %(n)s",
        {"state": state, "after": after[0] if after else None, "n": limit + 1},
    )
    rows = [dict(row) for row in await cursor_rows.fetchall()]
    items = rows[:limit]
    return Page(items, encode_cursor(items[-1]["id"]) if len(rows) > limit else None)


async def counts(conn: Conn, rollout_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Devices per state, per rollout (states without devices left out)."""
    cursor = await conn.execute(
        "SELECT rollout_id, state, count(*) AS n FROM rollout_devices"
        " WHERE rollout_id = ANY(%s) GROUP BY rollout_id, state",
        (list(rollout_ids),),
    )
    found: dict[int, dict[str, int]] = {rollout_id: {} for rollout_id in rollout_ids}
    for row in await cursor.fetchall():
        found[row["rollout_id"]][row["state"]] = row["n"]
    return found


async def targeted(
    conn: Conn, *, device_model: str | None, group_ids: Sequence[int], device_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """The enabled devices a target holds: `device_id`, `device_type`, `firmware_version`."""
    cursor = await conn.execute(
        "SELECT device_id, device_type, firmware_version FROM devices"
        " WHERE enabled AND (group_id = ANY(%(groups)s) OR device_id = ANY(%(devices)s))"
        " AND (%(model)s::text IS NULL OR device_type = %(model)s)",
        {"groups": list(group_ids), "devices": list(device_ids), "model": device_model},
    )
    return [dict(row) for row in await cursor.fetchall()]


async def devices(
    conn: Conn, rollout_id: int, *, state: str | None, limit: int
) -> list[dict[str, Any]]:
    """The rollout's devices: failures first, then the most recently changed."""
    cursor = await conn.execute(
        "SELECT device_id, state, from_version, progress, error, notified_at, finished_at,"
        " greatest(entered_at, notified_at, reported_at, came_back_at, finished_at) AS updated_at"
        " FROM rollout_devices WHERE rollout_id = %(id)s"
        " AND (%(state)s::text IS NULL OR state = %(state)s)"
        " ORDER BY state = ANY(%(failures)s) DESC, updated_at DESC, device_id LIMIT %(limit)s",
        {"id": rollout_id, "state": state, "failures": list(FAILURES), "limit": limit},
    )
    return [dict(row) for row in await cursor.fetchall()]


async def device_history(conn: Conn, device_id: str, limit: int) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT rd.rollout_id, f.device_model, f.version, rd.from_version, rd.state,"
        " rd.progress, rd.error, rd.entered_at, rd.notified_at, rd.finished_at, r.state AS"
        " rollout_state FROM rollout_devices rd JOIN rollouts r ON r.id = rd.rollout_id"
        " JOIN firmware f ON f.id = r.firmware_id WHERE rd.device_id = %s"
        " ORDER BY rd.entered_at DESC LIMIT %s",
        (device_id, limit),
    )
    return [dict(row) for row in await cursor.fetchall()]


async def update(conn: Conn, rollout_id: int, changes: dict[str, Any]) -> None:
    """Set columns of the rollout (names from this module's callers only)."""
    assignments = ", ".join(f"{column} = %({column})s" for column in changes)
    await conn.execute(
        f"UPDATE rollouts SET {assignments}, updated_at = now() WHERE id = %(id)s",
        {**changes, "id": rollout_id},
    )


async def cancel_devices(conn: Conn, rollout_id: int) -> int:
    """Every device of the rollout not finished is cancelled; answer how many."""
    cursor = await conn.execute(
        "UPDATE rollout_devices SET state = 'cancelled', finished_at = now()"
        " WHERE rollout_id = %s AND state <> ALL(%s)",
        (rollout_id, list(TERMINAL)),
    )
    return cursor.rowcount


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """A device's report on `devices/{id}/ota/progress`, decoded (ingest/decode.py)."""

    device_id: str
    received_at: datetime
    topic: str
    payload: bytes
    rollout_id: int
    version: str
    state: str
    progress: int | None
    error: str | None


async def apply_progress(conn: Conn, reports: Sequence[ProgressReport]) -> list[str | None]:
    """Record each report on its device's update; answer, per report, why it was refused
    (None: applied). A report for an update that is over, or that the device is not in,
    is refused, so it is kept with the reason rather than lost."""
    refusals: list[str | None] = []
    for report in reports:
        row = await (
            await conn.execute(
                # Once back on the new version (verifying), a late report of the steps
                # before is taken without going back; `failed` still counts.
                "UPDATE rollout_devices AS rd SET state = CASE WHEN rd.state = 'verifying'"
                " AND %(state)s <> 'failed' THEN rd.state ELSE %(state)s END,"
                " reported_at = %(time)s,"
                " progress = coalesce(%(progress)s, rd.progress),"
                " error = CASE WHEN %(state)s = 'failed' THEN %(error)s ELSE rd.error END,"
                " installed_at = CASE WHEN %(state)s IN ('installing', 'installed')"
                "  THEN coalesce(rd.installed_at, %(time)s) ELSE rd.installed_at END,"
                " finished_at = CASE WHEN %(state)s = 'failed' THEN %(time)s END"
                " FROM rollouts r JOIN firmware f ON f.id = r.firmware_id"
                " WHERE rd.rollout_id = %(rollout)s AND rd.device_id = %(device)s"
                " AND r.id = rd.rollout_id AND f.version = %(version)s"
                " AND rd.state = ANY(%(open)s)"
                " RETURNING rd.device_id",
                {
                    "open": list(OPEN),
                    "state": report.state,
                    "time": report.received_at,
                    "progress": report.progress,
                    "error": report.error or "the device reported failed without a reason",
                    "rollout": report.rollout_id,
                    "device": report.device_id,
                    "version": report.version,
                },
            )
        ).fetchone()
        refusals.append(
            None
            if row is not None
            else f"rollout {report.rollout_id} has no update of {report.version} under way "
            f"for {report.device_id}"
        )
    return refusals
