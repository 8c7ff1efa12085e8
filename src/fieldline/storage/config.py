"""Desired configuration per group and per device, its versions, history and delivery state.

Every change recomputes the effective configuration of the devices it touches
(fieldline.domain.config.effective) and gives a new version to each whose
effective configuration differs. A recomputation first locks the devices'
rows, in device id order and in one statement, and only then reads the group
objects: a change that waited for another's lock merges from what that one
committed. Each device row remembers which group version it was merged
from, so a device that raced a move between groups is found and caught up
by `follow_groups` (the worker runs it every round).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Json

from fieldline.domain.config import (
    ConfigChange,
    DeviceConfig,
    GroupConfig,
    JsonObject,
    Scope,
    Versioned,
    effective,
    encoded_size,
    merge,
    same_document,
)
from fieldline.storage.db import Row
from fieldline.storage.errors import NotFoundError
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]


class ConfigTooLargeError(ValueError):
    """A change would make a device's effective configuration exceed the limit."""


@dataclass(frozen=True, slots=True)
class Deliverable:
    device_id: str
    version: int
    effective: JsonObject


async def get_device_config(conn: Conn, device_id: str) -> DeviceConfig:
    row = await (
        await conn.execute(
            "SELECT d.device_id, g.name AS group_name, gc.config AS group_config,"
            " c.config, c.effective, c.version, c.published_version,"
            " d.reported_config_version, d.config_reported_at"
            " FROM devices d"
            " LEFT JOIN device_configs c USING (device_id)"
            " LEFT JOIN groups g ON g.id = d.group_id"
            " LEFT JOIN group_configs gc ON gc.group_id = d.group_id"
            " WHERE d.device_id = %s",
            (device_id,),
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"device {device_id!r} does not exist")
    group_config = row["group_config"]
    return DeviceConfig(
        device_id=row["device_id"],
        group=row["group_name"],
        own=row["config"] if row["config"] is not None else {},
        group_config=None if row["group_name"] is None else (group_config or {}),
        effective=row["effective"] if row["effective"] is not None else {},
        version=row["version"] or 0,
        published_version=row["published_version"],
        reported_version=row["reported_config_version"],
        reported_at=row["config_reported_at"],
    )


async def _group_row(conn: Conn, name: str, *, lock: bool = False) -> Row:
    # Locked for a change: a concurrent deletion of the group waits for it.
    row = await (
        await conn.execute(
            "SELECT g.id, g.name, gc.config, gc.version, gc.updated_at FROM groups g"
            " LEFT JOIN group_configs gc ON gc.group_id = g.id WHERE g.name = %s"
            + (" FOR KEY SHARE OF g" if lock else ""),
            (name,),
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"group {name!r} does not exist")
    return row


async def get_group_config(conn: Conn, name: str) -> GroupConfig:
    row = await _group_row(conn, name)
    return GroupConfig(
        group=row["name"],
        config=row["config"] if row["config"] is not None else {},
        version=row["version"] or 0,
        updated_at=row["updated_at"],
    )


async def set_device_config(
    conn: Conn,
    device_id: str,
    config: JsonObject,
    *,
    actor: str,
    patch: bool = False,
    max_effective_bytes: int | None = None,
) -> Versioned | None:
    """Replace (or, with `patch`, merge into) the device's own object.

    Answers the device's new version, or None when its effective configuration
    did not change. Raises NotFoundError, ConfigTooLargeError.
    """
    async with conn.transaction():
        if not await _lock_devices(conn, [device_id]):
            raise NotFoundError(f"device {device_id!r} does not exist")
        current = await (
            await conn.execute(
                "SELECT config FROM device_configs WHERE device_id = %s", (device_id,)
            )
        ).fetchone()
        assert current is not None
        own = merge(current["config"], config) if patch else config
        if max_effective_bytes is not None and encoded_size(own) > max_effective_bytes:
            raise ConfigTooLargeError(
                f"the device's configuration would be {encoded_size(own)} bytes serialized; "
                f"the limit is {max_effective_bytes}"
            )
        await conn.execute(
            "UPDATE device_configs SET config = %s WHERE device_id = %s", (Json(own), device_id)
        )
        versioned = await _recompute(
            conn,
            [device_id],
            actor=actor,
            scope=Scope.DEVICE,
            target=device_id,
            config=own,
            record_unchanged=True,
            max_effective_bytes=max_effective_bytes,
        )
    return versioned[0] if versioned else None


async def set_group_config(
    conn: Conn,
    name: str,
    config: JsonObject,
    *,
    actor: str,
    max_effective_bytes: int | None = None,
) -> tuple[GroupConfig, list[Versioned]]:
    """Replace the group's object; answer it and the devices that got a new version."""
    async with conn.transaction():
        group = await _group_row(conn, name, lock=True)
        row = await (
            await conn.execute(
                "INSERT INTO group_configs AS gc (group_id, config, version) VALUES (%s, %s, 1)"
                " ON CONFLICT (group_id) DO UPDATE SET config = EXCLUDED.config,"
                " version = gc.version + 1, updated_at = now()"
                " RETURNING config, version, updated_at",
                (group["id"], Json(config)),
            )
        ).fetchone()
        assert row is not None
        members = [
            r["device_id"]
            for r in await (
                await conn.execute(
                    "SELECT device_id FROM devices WHERE group_id = %s ORDER BY device_id",
                    (group["id"],),
                )
            ).fetchall()
        ]
        versioned = await _recompute(
            conn,
            members,
            actor=actor,
            scope=Scope.GROUP,
            target=name,
            config=config,
            group_id=group["id"],
            group_version=row["version"],
            max_effective_bytes=max_effective_bytes,
        )
    return GroupConfig(name, row["config"], row["version"], row["updated_at"]), versioned


async def follow_groups(
    conn: Conn, *, actor: str, device_ids: list[str] | None = None
) -> list[Versioned]:
    """Bring devices whose group changed (or that missed a change of it) up to date.

    Covers registration into a configured group, moving between groups, and a
    group change that raced a device's move. `device_ids` None: every device.
    """
    stale = await (
        await conn.execute(
            "SELECT d.device_id, g.name AS group_name, gc.config AS group_config"
            " FROM devices d"
            " LEFT JOIN device_configs c USING (device_id)"
            " LEFT JOIN groups g ON g.id = d.group_id"
            " LEFT JOIN group_configs gc ON gc.group_id = d.group_id"
            " WHERE (%(ids)s::text[] IS NULL OR d.device_id = ANY(%(ids)s::text[]))"
            " AND CASE WHEN c.device_id IS NULL THEN gc.group_id IS NOT NULL"
            " ELSE c.group_id IS DISTINCT FROM d.group_id"
            " OR c.group_version IS DISTINCT FROM gc.version END"
            " ORDER BY d.device_id",
            {"ids": device_ids},
        )
    ).fetchall()
    by_group: dict[str | None, list[str]] = defaultdict(list)
    configs: dict[str | None, JsonObject | None] = {}
    for row in stale:
        by_group[row["group_name"]].append(row["device_id"])
        configs[row["group_name"]] = row["group_config"]
    versioned: list[Versioned] = []
    for group_name, members in by_group.items():
        # A transaction per group: no transaction holds device locks taken in two statements.
        async with conn.transaction():
            versioned += await _recompute(
                conn,
                members,
                actor=actor,
                scope=Scope.MEMBERSHIP,
                target=group_name,
                config=configs[group_name],
            )
    return versioned


async def _lock_devices(conn: Conn, device_ids: list[str]) -> list[str]:
    """Lock the devices, then their configuration rows (made if missing), each in id order.

    Answers the devices locked: those of `device_ids` that exist.

    Devices first, as a deletion does (it cascades from the device to its
    configuration): a concurrent deletion waits for the change, or the change
    finds the device gone, never a deadlock.
    """
    present = [
        row["device_id"]
        for row in await (
            await conn.execute(
                "SELECT device_id FROM devices WHERE device_id = ANY(%s::text[])"
                " ORDER BY device_id FOR KEY SHARE",
                (device_ids,),
            )
        ).fetchall()
    ]
    await conn.execute(
        "INSERT INTO device_configs (device_id) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
        (present,),
    )
    await conn.execute(
        "SELECT device_id FROM device_configs WHERE device_id = ANY(%s::text[])"
        " ORDER BY device_id FOR UPDATE",
        (present,),
    )
    return present


async def _recompute(
    conn: Conn,
    device_ids: list[str],
    *,
    actor: str,
    scope: Scope,
    target: str | None,
    config: JsonObject | None,
    group_id: int | None = None,
    group_version: int | None = None,
    record_unchanged: bool = False,
    max_effective_bytes: int | None = None,
) -> list[Versioned]:
    """Merge again, version what changed, record the change; inside the caller's transaction."""
    locked = await _lock_devices(conn, device_ids)
    # Only what is locked (a device may have been deleted and registered again meanwhile), in
    # a statement of its own after the locks: it sees what the changes it waited for committed.
    rows = await (
        await conn.execute(
            "SELECT c.device_id, c.config, c.effective, c.version, d.group_id,"
            " gc.config AS group_config, gc.version AS group_version"
            " FROM device_configs c JOIN devices d USING (device_id)"
            " LEFT JOIN group_configs gc ON gc.group_id = d.group_id"
            " WHERE c.device_id = ANY(%s::text[]) ORDER BY c.device_id",
            (locked,),
        )
    ).fetchall()
    updates: list[tuple[str, str, int, int | None, int | None]] = []
    history: list[tuple[str, int | None]] = []
    versioned: list[Versioned] = []
    for row in rows:
        merged = effective(row["group_config"], row["config"])
        version: int = row["version"]
        if not same_document(merged, row["effective"]):
            if max_effective_bytes is not None and encoded_size(merged) > max_effective_bytes:
                raise ConfigTooLargeError(
                    f"the effective configuration of device {row['device_id']!r} would be "
                    f"{encoded_size(merged)} bytes serialized; the limit is {max_effective_bytes}"
                )
            version += 1
            versioned.append(Versioned(row["device_id"], version))
            history.append((row["device_id"], version))
        elif record_unchanged:
            history.append((row["device_id"], None))
        updates.append(
            (
                row["device_id"],
                orjson.dumps(merged).decode(),
                version,
                row["group_id"],
                row["group_version"],
            )
        )
    if updates:
        await conn.execute(
            "UPDATE device_configs AS c SET effective = v.effective::json,"
            " updated_at = CASE WHEN c.version <> v.version THEN now() ELSE c.updated_at END,"
            " version = v.version, group_id = v.group_id, group_version = v.group_version"
            " FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[])"
            " AS v(device_id, effective, version, group_id, group_version)"
            " WHERE c.device_id = v.device_id",
            tuple(list(column) for column in zip(*updates, strict=True)),
        )
    if scope is Scope.MEMBERSHIP and not versioned:
        return versioned  # a move that changed nothing is not a change worth a history entry
    if scope is Scope.DEVICE:
        change_version = versioned[0].version if versioned else None
    else:
        change_version = group_version
    change = await (
        await conn.execute(
            "INSERT INTO config_changes"
            " (actor, scope, target, group_id, config, version, devices_versioned)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                actor,
                scope.value,
                target,
                group_id,
                Json(config) if config is not None else None,
                change_version,
                len(versioned),
            ),
        )
    ).fetchone()
    assert change is not None
    if history:
        await conn.execute(
            "INSERT INTO device_config_history (device_id, change_id, version)"
            " SELECT v.device_id, %s, v.version FROM unnest(%s::text[], %s::bigint[])"
            " AS v(device_id, version)",
            (change["id"], [h[0] for h in history], [h[1] for h in history]),
        )
    return versioned


async def device_history(
    conn: Conn, device_id: str, *, limit: int, cursor: str | None
) -> Page[ConfigChange]:
    """The changes that reached the device, newest first."""
    await get_device_config(conn, device_id)  # 404 for an unknown device
    before = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            "SELECT h.id AS cursor_id, c.id, c.time, c.actor, c.scope, c.target, c.config,"
            " h.version, c.devices_versioned"
            " FROM device_config_history h JOIN config_changes c ON c.id = h.change_id"
            " WHERE h.device_id = %(device)s"
            " AND (%(before)s::bigint IS NULL OR h.id < %(before)s::bigint)"
            " ORDER BY h.id DESC LIMIT %(limit)s",
            {"device": device_id, "before": before[0] if before else None, "limit": limit + 1},
        )
    ).fetchall()
    items = [_change(row) for row in rows[:limit]]
    last = rows[limit - 1]["cursor_id"] if len(rows) > limit else None
    return Page(items, encode_cursor(last) if last is not None else None)


async def group_history(
    conn: Conn, name: str, *, limit: int, cursor: str | None
) -> Page[ConfigChange]:
    """Changes of the group's object, newest first."""
    group = await _group_row(conn, name)
    before = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            "SELECT id, time, actor, scope, target, config, version, devices_versioned"
            " FROM config_changes WHERE scope = 'group' AND group_id = %(group)s"
            " AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)"
            " ORDER BY id DESC LIMIT %(limit)s",
            {"group": group["id"], "before": before[0] if before else None, "limit": limit + 1},
        )
    ).fetchall()
    items = [_change(row) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)


def _change(row: Row) -> ConfigChange:
    return ConfigChange(
        id=row["id"],
        time=row["time"],
        actor=row["actor"],
        scope=Scope(row["scope"]),
        target=row["target"],
        config=row["config"],
        version=row["version"],
        devices_versioned=row["devices_versioned"],
    )


async def lock_deliverable(
    conn: Conn,
    *,
    device_ids: list[str] | None,
    everything: bool,
    after: str | None,
    limit: int,
) -> list[Deliverable]:
    """Configurations to publish, locked until the caller's transaction ends.

    The lock keeps a slower publisher from overwriting a newer retained
    configuration with an older one. `everything`: also those already published.
    """
    params: dict[str, Any] = {
        "ids": device_ids,
        "everything": everything,
        "after": after,
        "limit": limit,
    }
    rows = await (
        await conn.execute(
            "SELECT device_id, version, effective FROM device_configs"
            " WHERE version > 0"
            " AND (%(everything)s OR version > coalesce(published_version, 0))"
            " AND (%(ids)s::text[] IS NULL OR device_id = ANY(%(ids)s::text[]))"
            " AND (%(after)s::text IS NULL OR device_id > %(after)s::text)"
            " ORDER BY device_id LIMIT %(limit)s FOR UPDATE",
            params,
        )
    ).fetchall()
    return [Deliverable(**row) for row in rows]


async def mark_published(conn: Conn, published: list[Deliverable]) -> None:
    if not published:
        return
    await conn.execute(
        "UPDATE device_configs AS c"
        " SET published_version = greatest(coalesce(c.published_version, 0), v.version),"
        " published_at = now()"
        " FROM unnest(%s::text[], %s::bigint[]) AS v(device_id, version)"
        " WHERE c.device_id = v.device_id",
        ([p.device_id for p in published], [p.version for p in published]),
    )
