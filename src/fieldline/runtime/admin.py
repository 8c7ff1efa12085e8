"""The first administrator, created by whichever process starts first."""

from __future__ import annotations

from fieldline import users
from fieldline.config import Settings
from fieldline.storage.db import Pool


async def ensure_admin(pool: Pool, settings: Settings) -> str | None:
    """Create `admin` on first start; answer its password if it was generated now."""
    given = settings.admin_password
    async with pool.connection() as conn:
        return await users.ensure_admin(conn, password=given.get_secret_value() if given else None)
