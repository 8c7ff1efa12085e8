"""Connection pools; every other storage module takes a pool or a connection."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

Row = dict[str, Any]
Pool = AsyncConnectionPool[AsyncConnection[Row]]


async def _configure(conn: AsyncConnection[Row]) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.commit()


async def open_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, name: str = "fieldline"
) -> Pool:
    pool: Pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        configure=_configure,
        connection_class=AsyncConnection[Row],
        kwargs={"row_factory": dict_row, "application_name": name, "autocommit": True},
    )
    await pool.open(wait=True, timeout=30)
    return pool
