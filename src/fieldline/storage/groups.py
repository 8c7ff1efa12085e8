"""Changing and deleting groups (creating and listing them: storage/devices.py).

A group is its row's id everywhere a device, a provisioning key or a configuration
refers to it, so a rename moves those with it. Alert rules and silences name a group
instead (a rule may be written before its group exists): a rename moves those too, in
the same transaction, so that no rule stops watching the devices it watched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation

from fieldline.domain.config import Versioned
from fieldline.domain.devices import Group
from fieldline.storage import config as config_store
from fieldline.storage.db import Row
from fieldline.storage.errors import AlreadyExistsError, InUseError, NotFoundError

Conn = AsyncConnection[Row]

# The keys a provisioning key that can still register a device: deleting its group would
# silently change where its devices go, so the deletion is refused while one exists.
_USABLE_KEY = (
    "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
    " AND (max_uses IS NULL OR uses < max_uses)"
)


@dataclass(frozen=True, slots=True)
class GroupDetail:
    group: Group
    device_count: int


@dataclass(frozen=True, slots=True)
class Deletion:
    group: Group
    devices: list[str]  # its members, now in no group
    versioned: list[Versioned]  # those whose effective configuration changed


async def get_group(conn: Conn, name: str) -> GroupDetail:
    row = await (
        await conn.execute(
            "SELECT g.*, (SELECT count(*) FROM devices d WHERE d.group_id = g.id) AS device_count"
            " FROM groups g WHERE g.name = %s",
            (name,),
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"group {name!r} does not exist")
    device_count = row.pop("device_count")
    return GroupDetail(Group(**row), device_count)


async def update_group(conn: Conn, name: str, changes: dict[str, Any]) -> Group:
    """Apply `changes` (name, description, timezone). Raises NotFoundError, and
    AlreadyExistsError when the new name is another group's."""
    fields = [f for f in ("name", "description", "timezone") if f in changes]
    assignments = ", ".join(f"{f} = %({f})s" for f in fields) or "name = name"
    try:
        async with conn.transaction():
            row = await (
                await conn.execute(
                    f"UPDATE groups SET {assignments} WHERE name = %(old)s RETURNING *",
                    {**changes, "old": name},
                )
            ).fetchone()
            if row is None:
                raise NotFoundError(f"group {name!r} does not exist")
            renamed = row["name"]
            if renamed != name:
                await conn.execute(
                    "UPDATE alert_rules SET scope_value = %(new)s, updated_at = now()"
                    " WHERE scope_kind = 'group' AND scope_value = %(old)s",
                    {"new": renamed, "old": name},
                )
                await conn.execute(
                    "UPDATE silences SET group_name = %(new)s WHERE group_name = %(old)s",
                    {"new": renamed, "old": name},
                )
    except UniqueViolation as exc:
        raise AlreadyExistsError(f"group {changes['name']!r} already exists") from exc
    return Group(**row)


async def delete_group(conn: Conn, name: str, *, actor: str) -> Deletion:
    """Delete the group; its devices stay, in no group, and each whose effective
    configuration included the group's object gets a new version without it (to be
    delivered by the caller). The group's own configuration goes with it.

    Raises NotFoundError, and InUseError while a usable provisioning key registers
    devices into the group. Alert rules and silences naming it are left as they are:
    they cover no device until a group of that name exists again.
    """
    async with conn.transaction():
        row = await (
            await conn.execute("SELECT * FROM groups WHERE name = %s FOR UPDATE", (name,))
        ).fetchone()
        if row is None:
            raise NotFoundError(f"group {name!r} does not exist")
        group = Group(**row)
        key = await (
            await conn.execute(
                f"SELECT key_id, name FROM provisioning_keys WHERE group_id = %s AND {_USABLE_KEY}"
                " ORDER BY created_at LIMIT 1",
                (group.id,),
            )
        ).fetchone()
        if key is not None:
            raise InUseError(
                f"provisioning key {key['name']!r} ({key['key_id']}) registers devices into"
                f" group {name!r}: revoke it first"
            )
        await conn.execute(
            "UPDATE provisioning_keys SET group_id = NULL WHERE group_id = %s", (group.id,)
        )
        # In id order, as every change that locks several devices takes them.
        members = [
            r["device_id"]
            for r in await (
                await conn.execute(
                    "SELECT device_id FROM devices WHERE group_id = %s"
                    " ORDER BY device_id FOR UPDATE",
                    (group.id,),
                )
            ).fetchall()
        ]
        await conn.execute(
            "UPDATE devices SET group_id = NULL, updated_at = now() WHERE group_id = %s",
            (group.id,),
        )
        await conn.execute("DELETE FROM groups WHERE id = %s", (group.id,))
        versioned = (
            await config_store.follow_groups(conn, actor=actor, device_ids=members)
            if members
            else []
        )
    return Deletion(group, members, versioned)
