"""Creating, changing and deleting users, each with its audit entry.

A change of password or role ends every session of the user at once (a token was
given for the old password and role); API keys stay. The acting user (`actor`) is
whom the audit log names; the CLI and the first start act without one and write no
entry, as they always have.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg import AsyncConnection

from fieldline.domain.users import Role, User
from fieldline.security.passwords import generate_secret
from fieldline.storage import audit as audit_store
from fieldline.storage import users as user_store
from fieldline.storage.db import Row
from fieldline.storage.errors import NotFoundError
from fieldline.users.passwords import check_password, hash_password

log = logging.getLogger(__name__)

Conn = AsyncConnection[Row]

ADMIN_USERNAME = "admin"


class SelfLockoutError(Exception):
    """An admin may not take the admin role from themselves or delete themselves:
    the last admin would lock everyone out of user management."""


async def record_user_change(
    conn: Conn, actor: User, action: str, user: User, detail: dict[str, Any]
) -> None:
    """An audit entry: `actor` did `action` to `user`."""
    await audit_store.record(
        conn,
        actor=audit_store.user_actor(actor.username),
        action=action,
        target_type="user",
        target_id=user.username,
        detail=detail,
    )


async def create_user(
    conn: Conn, *, username: str, password: str, role: Role, actor: User | None
) -> User:
    """A new user; `WeakPasswordError` before anything is stored, `AlreadyExistsError`
    if the name is taken."""
    check_password(password)
    password_hash = await hash_password(password)
    async with conn.transaction():
        user = await user_store.create_user(
            conn, username=username, password_hash=password_hash, role=role
        )
        if actor is not None:
            await record_user_change(conn, actor, "user.create", user, {"role": user.role.value})
    return user


async def ensure_admin(conn: Conn, *, password: str | None) -> str | None:
    """Create `admin` on first start (no admin yet); answer its password if generated now.

    A `password` given by the operator's setting is taken as it is, as it always
    was; a generated one meets the policy.
    """
    if await user_store.count_admins(conn):
        return None
    chosen = password if password is not None else generate_secret(12)
    await user_store.create_user(
        conn, username=ADMIN_USERNAME, password_hash=await hash_password(chosen), role=Role.ADMIN
    )
    log.info("admin user created", extra={"username": ADMIN_USERNAME})
    return None if password is not None else chosen


async def update_user(
    conn: Conn, *, actor: User, user_id: int, password: str | None, role: Role | None
) -> User:
    """An admin changes another user's (or their own) password or role."""
    changes: dict[str, object] = {}
    if role is not None:
        if user_id == actor.id and role is not Role.ADMIN:
            raise SelfLockoutError("you cannot take the admin role from yourself")
        changes["role"] = role
    if password is not None:
        check_password(password)
        changes["password_hash"] = await hash_password(password)
    async with conn.transaction():
        user = await user_store.update_user(conn, user_id, changes, end_sessions=bool(changes))
        detail: dict[str, Any] = {"password_changed": password is not None}
        if role is not None:
            detail["role"] = role.value
        await record_user_change(conn, actor, "user.update", user, detail)
    return user


async def reset_password(conn: Conn, *, username: str, password: str) -> User:
    """A password set from the shell (`fieldline user passwd`): for a user locked out, the
    admin included. Ends the user's sessions; the audit log names the CLI."""
    check_password(password)
    password_hash = await hash_password(password)
    async with conn.transaction():
        found = await user_store.credentials_of(conn, username)
        if found is None:
            raise NotFoundError(f"user {username!r} does not exist")
        user = await user_store.update_user(
            conn, found[0].id, {"password_hash": password_hash}, end_sessions=True
        )
        await audit_store.record(
            conn,
            actor="cli",
            action="user.update",
            target_type="user",
            target_id=user.username,
            detail={"password_changed": True},
        )
    return user


async def change_own_password(conn: Conn, *, user: User, new_password: str) -> User:
    """The user changed their own password (the door checked the current one)."""
    check_password(new_password)
    password_hash = await hash_password(new_password)
    async with conn.transaction():
        changed = await user_store.update_user(
            conn, user.id, {"password_hash": password_hash}, end_sessions=True
        )
        await record_user_change(conn, changed, "user.change_password", changed, {})
    return changed


async def delete_user(conn: Conn, *, actor: User, user_id: int) -> None:
    if user_id == actor.id:
        raise SelfLockoutError("you cannot delete yourself")
    async with conn.transaction():
        user = await user_store.get_user(conn, user_id)
        await user_store.delete_user(conn, user_id)
        await record_user_change(conn, actor, "user.delete", user, {})
