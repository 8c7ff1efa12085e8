"""The first administrator, created by whichever process starts first."""

from __future__ import annotations

import asyncio
import logging

from fieldline.config import Settings
from fieldline.domain.users import Role
from fieldline.security.passwords import USER_ITERATIONS, generate_secret, hash_secret
from fieldline.storage import users as user_store
from fieldline.storage.db import Pool

log = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"


async def ensure_admin(pool: Pool, settings: Settings) -> str | None:
    """Create `admin` on first start; answer its password if it was generated now."""
    async with pool.connection() as conn:
        if await user_store.count_admins(conn):
            return None
        given = settings.admin_password
        password = given.get_secret_value() if given else generate_secret(12)
        hashed = await asyncio.to_thread(hash_secret, password, iterations=USER_ITERATIONS)
        await user_store.create_user(
            conn, username=ADMIN_USERNAME, password_hash=hashed.encode(), role=Role.ADMIN
        )
        log.info("admin user created", extra={"username": ADMIN_USERNAME})
        return None if given else password
