"""The device registry: devices, their groups and credentials."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.types.json import Json, Jsonb

from fieldline.domain.devices import ConnectionStatus, Device, DeviceAccess, Group, StatusEvent
from fieldline.storage.db import Row
from fieldline.storage.errors import AlreadyExistsError, GroupNotFoundError, NotFoundError
from fieldline.storage.paging import Page, decode_cursor, encode_cursor
from fieldline.storage.telemetry import announce_latest_changes

Conn = AsyncConnection[Row]

_DEVICE_COLUMNS = (
    "d.device_id, d.name, d.device_type, g.name AS group_name, d.metadata, d.enabled, d.status,"
    " d.last_seen, d.firmware_version, d.created_at, d.updated_at"
)


def _device(row: Row) -> Device:
    return Device(
        device_id=row["device_id"],
        name=row["name"],
        device_type=row["device_type"],
        group=row["group_name"],
        metadata=row["metadata"],
        enabled=row["enabled"],
        reported_status=ConnectionStatus(row["status"]),
        last_seen=row["last_seen"],
        firmware_version=row["firmware_version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def _group_id(conn: Conn, name: str | None) -> int | None:
    if name is None:
        return None
    row = await (await conn.execute("SELECT id FROM groups WHERE name = %s", (name,))).fetchone()
    if row is None:
        raise GroupNotFoundError(f"group {name!r} does not exist")
    return int(row["id"])


async def create_group(
    conn: Conn, *, name: str, description: str = "", timezone: str | None = None
) -> Group:
    try:
        row = await (
            await conn.execute(
                "INSERT INTO groups (name, description, timezone) VALUES (%s, %s, %s) RETURNING *",
                (name, description, timezone),
            )
        ).fetchone()
    except UniqueViolation as exc:
        raise AlreadyExistsError(f"group {name!r} already exists") from exc
    assert row is not None
    return Group(**row)


async def list_groups(conn: Conn, *, limit: int, cursor: str | None) -> Page[Group]:
    after = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            "SELECT * FROM groups WHERE %s::text IS NULL OR name > %s::text ORDER BY name LIMIT %s",
            (after[0] if after else None, after[0] if after else None, limit + 1),
        )
    ).fetchall()
    items = [Group(**row) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].name) if len(rows) > limit else None)


async def create_device(
    conn: Conn,
    *,
    device_id: str,
    name: str,
    device_type: str,
    group: str | None,
    metadata: dict[str, Any],
    secret_hash: str,
) -> Device:
    async with conn.transaction():
        group_id = await _group_id(conn, group)
        try:
            await conn.execute(
                "INSERT INTO devices (device_id, name, device_type, group_id, metadata)"
                " VALUES (%s, %s, %s, %s, %s)",
                (device_id, name, device_type, group_id, Json(metadata)),
            )
        except UniqueViolation as exc:
            raise AlreadyExistsError(f"device {device_id!r} already exists") from exc
        await conn.execute(
            "INSERT INTO device_credentials (device_id, secret_hash) VALUES (%s, %s)",
            (device_id, secret_hash),
        )
    return await get_device(conn, device_id)


async def get_device(conn: Conn, device_id: str) -> Device:
    row = await (
        await conn.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices d LEFT JOIN groups g ON g.id = d.group_id"
            " WHERE d.device_id = %s",
            (device_id,),
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"device {device_id!r} does not exist")
    return _device(row)


async def list_devices(
    conn: Conn, *, limit: int, cursor: str | None, group: str | None = None
) -> Page[Device]:
    after = decode_cursor(cursor, 1)
    after_id = str(after[0]) if after else None
    rows = await (
        await conn.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices d LEFT JOIN groups g ON g.id = d.group_id"
            " WHERE (%(after)s::text IS NULL OR d.device_id > %(after)s::text)"
            " AND (%(group)s::text IS NULL OR g.name = %(group)s::text)"
            " ORDER BY d.device_id LIMIT %(limit)s",
            {"after": after_id, "group": group, "limit": limit + 1},
        )
    ).fetchall()
    items = [_device(row) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].device_id) if len(rows) > limit else None)


async def update_device(conn: Conn, device_id: str, changes: dict[str, Any]) -> Device:
    """Apply `changes` (name, device_type, group, metadata, enabled)."""
    assignments: list[str] = []
    values: dict[str, Any] = {"device_id": device_id}
    async with conn.transaction():
        for field in ("name", "device_type", "enabled"):
            if field in changes:
                assignments.append(f"{field} = %({field})s")
                values[field] = changes[field]
        if "metadata" in changes:
            assignments.append("metadata = %(metadata)s")
            values["metadata"] = Json(changes["metadata"])
        if "group" in changes:
            assignments.append("group_id = %(group_id)s")
            values["group_id"] = await _group_id(conn, changes["group"])
        assignments.append("updated_at = now()")
        cursor = await conn.execute(
            f"UPDATE devices SET {', '.join(assignments)} WHERE device_id = %(device_id)s",
            values,
        )
        if cursor.rowcount == 0:
            raise NotFoundError(f"device {device_id!r} does not exist")
    return await get_device(conn, device_id)


async def delete_device(conn: Conn, device_id: str) -> None:
    """Remove a device and its current state; its stored telemetry history stays."""
    async with conn.transaction():
        cursor = await conn.execute("DELETE FROM devices WHERE device_id = %s", (device_id,))
        if cursor.rowcount == 0:
            raise NotFoundError(f"device {device_id!r} does not exist")
        for table in ("telemetry_latest", "device_attributes"):
            await conn.execute(f"DELETE FROM {table} WHERE device_id = %s", (device_id,))
        await announce_latest_changes(conn, [device_id])


async def set_secret(conn: Conn, device_id: str, secret_hash: str) -> None:
    cursor = await conn.execute(
        "UPDATE device_credentials SET secret_hash = %s, rotated_at = now() WHERE device_id = %s",
        (secret_hash, device_id),
    )
    if cursor.rowcount == 0:
        raise NotFoundError(f"device {device_id!r} does not exist")


async def mark_dropped(conn: Conn, device_id: str, *, reason: str) -> bool:
    """fieldline made the broker drop the device's session: offline at once, with a status
    event (`{"reason": ...}`), as its last will would say; answer whether it was online.

    Else it would be shown online until the offline timeout. A device that has no last will
    (or whose broker does not send it for a kicked session) would never say otherwise.
    """
    row = await (
        await conn.execute(
            "WITH dropped AS (UPDATE devices SET status = 'offline'"
            "  WHERE device_id = %(device)s AND status = 'online' RETURNING device_id)"
            " INSERT INTO device_status_events (device_id, time, status, detail)"
            " SELECT device_id, statement_timestamp(), 'offline', %(detail)s FROM dropped"
            " RETURNING device_id",
            {"device": device_id, "detail": Jsonb({"reason": reason})},
        )
    ).fetchone()
    return row is not None


async def device_access(conn: Conn, device_id: str) -> DeviceAccess:
    row = await (
        await conn.execute(
            "SELECT d.device_id, c.secret_hash, d.enabled FROM devices d"
            " JOIN device_credentials c USING (device_id) WHERE d.device_id = %s",
            (device_id,),
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"device {device_id!r} does not exist")
    return DeviceAccess(**row)


async def all_device_access(conn: Conn) -> list[DeviceAccess]:
    rows = await (
        await conn.execute(
            "SELECT d.device_id, c.secret_hash, d.enabled FROM devices d"
            " JOIN device_credentials c USING (device_id) ORDER BY d.device_id"
        )
    ).fetchall()
    return [DeviceAccess(**row) for row in rows]


async def count_online(conn: Conn, *, since: datetime) -> int:
    row = await (
        await conn.execute(
            "SELECT count(*) AS n FROM devices WHERE status = 'online' AND last_seen >= %s",
            (since,),
        )
    ).fetchone()
    return int(row["n"]) if row else 0


async def status_history(
    conn: Conn, device_id: str, *, limit: int, cursor: str | None
) -> Page[StatusEvent]:
    """The device's status changes, newest first."""
    await get_device(conn, device_id)
    before = decode_cursor(cursor, 2)
    rows = await (
        await conn.execute(
            "SELECT id, time, status, detail FROM device_status_events"
            " WHERE device_id = %(device)s AND (%(time)s::timestamptz IS NULL"
            " OR (time, id) < (%(time)s::timestamptz, %(id)s::bigint))"
            " ORDER BY time DESC, id DESC LIMIT %(limit)s",
            {
                "device": device_id,
                "time": before[0] if before else None,
                "id": before[1] if before else None,
                "limit": limit + 1,
            },
        )
    ).fetchall()
    items = [
        StatusEvent(time=row["time"], status=row["status"], detail=row["detail"])
        for row in rows[:limit]
    ]
    last = rows[limit - 1] if len(rows) > limit else None
    return Page(items, encode_cursor(last["time"].isoformat(), last["id"]) if last else None)


async def group_ids(conn: Conn, names: list[str]) -> dict[str, int]:
    """The ids of the groups with these names (those that exist)."""
    cursor = await conn.execute("SELECT name, id FROM groups WHERE name = ANY(%s)", (names,))
    return {row["name"]: row["id"] for row in await cursor.fetchall()}
