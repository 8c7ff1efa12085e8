"""Users created and changed without HTTP, as the CLI and the first start do: one
password policy, an audit entry when someone acts, sessions ended on a change."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fieldline import users
from fieldline.domain.users import Role
from fieldline.security.passwords import verify_encoded
from fieldline.storage import users as user_store
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.errors import AlreadyExistsError
from fieldline.storage.migrate import migrate


@pytest.fixture
async def pool(pg15_database_url: str) -> AsyncIterator[Pool]:
    await migrate(pg15_database_url)
    pool = await open_pool(pg15_database_url, min_size=1, max_size=1)
    yield pool
    await pool.close()


async def audit_actions(pool: Pool) -> list[tuple[str, str, str]]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT actor, action, target_id FROM audit_log ORDER BY id")
        ).fetchall()
    return [(row["actor"], row["action"], row["target_id"]) for row in rows]


async def test_a_too_short_password_creates_nobody(pool: Pool) -> None:
    async with pool.connection() as conn:
        with pytest.raises(users.WeakPasswordError, match="at least 10 characters"):
            await users.create_user(
                conn, username="ann", password="9-letters", role=Role.VIEWER, actor=None
            )
        assert await user_store.credentials_of(conn, "ann") is None
    with pytest.raises(users.WeakPasswordError, match="at most 1024 characters"):
        users.check_password("x" * 1025)


async def test_the_first_admin_creates_users_with_an_audit_entry(pool: Pool) -> None:
    async with pool.connection() as conn:
        generated = await users.ensure_admin(conn, password=None)
        assert generated is not None
        assert len(generated) >= users.MIN_PASSWORD_LENGTH
        assert await users.ensure_admin(conn, password=None) is None  # once only
        found = await user_store.credentials_of(conn, users.ADMIN_USERNAME)
        assert found is not None
        admin, admin_hash = found
        assert verify_encoded(admin_hash, generated)

        # Without an actor (the CLI): no audit entry, as ever.
        await users.create_user(
            conn, username="cli-made", password="long-enough-1", role=Role.VIEWER, actor=None
        )
        ann = await users.create_user(
            conn, username="ann", password="long-enough-2", role=Role.OPERATOR, actor=admin
        )
        with pytest.raises(AlreadyExistsError):
            await users.create_user(
                conn, username="ann", password="long-enough-3", role=Role.VIEWER, actor=admin
            )
        changed = await users.update_user(
            conn, actor=admin, user_id=ann.id, password=None, role=Role.VIEWER
        )
    assert changed.role is Role.VIEWER
    assert changed.token_version > ann.token_version  # her sessions ended
    assert await audit_actions(pool) == [
        ("user:admin", "user.create", "ann"),
        ("user:admin", "user.update", "ann"),
    ]


async def test_an_admin_cannot_lock_themselves_out(pool: Pool) -> None:
    async with pool.connection() as conn:
        await users.ensure_admin(conn, password="the-admins-password")
        found = await user_store.credentials_of(conn, users.ADMIN_USERNAME)
        assert found is not None
        admin = found[0]
        with pytest.raises(users.SelfLockoutError):
            await users.update_user(
                conn, actor=admin, user_id=admin.id, password=None, role=Role.OPERATOR
            )
        with pytest.raises(users.SelfLockoutError):
            await users.delete_user(conn, actor=admin, user_id=admin.id)
        assert (await user_store.get_user(conn, admin.id)).role is Role.ADMIN
