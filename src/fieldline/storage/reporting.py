"""The read-only SQL role for Grafana, psql and notebooks: the `reporting` views
(migration 0021) and nothing else; no table, no write."""

from __future__ import annotations

from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row

READER = "fieldline_reader"


async def ensure_reader(conn: AsyncConnection[object], password: str) -> None:
    """Create (or update) the role with `password`, granted the `reporting` views. Needs a
    role that may create roles: `up` does this on its embedded server; for an external one
    the docs give the same statements to its administrator."""
    async with conn.transaction():
        cursor = conn.cursor(row_factory=tuple_row)
        await cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER,))
        exists = await cursor.fetchone()
        verb = "ALTER" if exists else "CREATE"
        # A role's password cannot be a bind parameter; a literal is quoted by psycopg.
        await conn.execute(
            sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(READER), sql.Literal(password)
            )
        )
        await cursor.execute("SELECT current_database()")
        (database,) = await cursor.fetchone() or ("",)
        # No grant on fieldline's own tables: the views read them with their owner's rights.
        for statement in (
            "GRANT CONNECT ON DATABASE {database} TO {reader}",
            "GRANT USAGE ON SCHEMA reporting TO {reader}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO {reader}",
        ):
            await conn.execute(
                sql.SQL(statement).format(
                    database=sql.Identifier(str(database)), reader=sql.Identifier(READER)
                )
            )
