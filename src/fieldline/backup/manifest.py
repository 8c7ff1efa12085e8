"""A backup's manifest: what it holds, and every table's row count and checksum.

The counts and checksums are taken in the very snapshot pg_dump dumps (create.py), so
they describe exactly the dump, even while ingest keeps writing; `verify` restores the
dump and takes them again to compare. Every table with rows of its own is counted: each
telemetry partition, not its partitioned parent, which holds none. Tables an extension
owns are its business (TimescaleDB's catalog), but its hypertables' chunks are counted.

A table's checksum is the sum of the first 64 bits of md5(row::text) over its rows:
independent of row order (a restore reorders them), and the same on any PostgreSQL
version as long as rows print the same, which the session settings below pin.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import tuple_row

FORMAT = 1
MANIFEST = "manifest.json"
DUMP = "database.dump"
FILES = "files.tar"

COUNTED = (
    "every table with rows of its own, extension-owned tables excepted: each partition of a "
    "partitioned table is counted, the partitioned parent (which holds no rows) is not"
)
CHECKSUM = "sum over rows of the first 64 bits of md5(row::text), as a signed bigint"

# How rows print: fixed, so a checksum taken on one server matches one taken on another.
_STABLE_TEXT = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
)

_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


class ManifestError(ValueError):
    """A manifest that cannot be read: not fieldline's, or from a newer fieldline."""


@dataclass(frozen=True, slots=True)
class TableSum:
    table: str  # schema.name
    rows: int
    checksum: int


@dataclass(frozen=True, slots=True)
class Part:
    """A file of the backup, as stored beside the manifest."""

    key: str  # relative to the backup's folder
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Manifest:
    id: str
    created_at: datetime  # when the snapshot was taken
    fieldline_version: str
    server_version: str
    database: str
    timescaledb: str | None  # the extension's version when the database had it
    tables: tuple[TableSum, ...]
    dump: Part
    files: Part
    data_files: tuple[str, ...]  # paths in the data directory, as in FILES

    @property
    def rows(self) -> int:
        return sum(table.rows for table in self.tables)

    @property
    def size(self) -> int:
        return self.dump.bytes + self.files.bytes

    def to_json(self) -> bytes:
        body = asdict(self)
        body["created_at"] = self.created_at.isoformat()
        for table in body["tables"]:
            table["checksum"] = str(table["checksum"])  # beyond JSON's exact integers
        return json.dumps(
            {"format": FORMAT, "counted": COUNTED, "checksum": CHECKSUM, **body}, indent=1
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            body: dict[str, Any] = json.loads(data)
            if body.get("format") != FORMAT:
                raise ManifestError(
                    f"manifest format {body.get('format')!r}: this fieldline reads format "
                    f"{FORMAT} (a newer fieldline wrote it?)"
                )
            return cls(
                id=body["id"],
                created_at=datetime.fromisoformat(body["created_at"]),
                fieldline_version=body["fieldline_version"],
                server_version=body["server_version"],
                database=body["database"],
                timescaledb=body["timescaledb"],
                tables=tuple(
                    TableSum(t["table"], int(t["rows"]), int(t["checksum"])) for t in body["tables"]
                ),
                dump=Part(**body["dump"]),
                files=Part(**body["files"]),
                data_files=tuple(body["data_files"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, ManifestError):
                raise
            raise ManifestError(f"not a fieldline backup manifest: {exc}") from exc


async def stable_text(conn: AsyncConnection[Any]) -> None:
    """Make rows print the same way on every server, for their checksums."""
    for statement in _STABLE_TEXT:
        await conn.execute(statement)


async def tables(conn: AsyncConnection[Any]) -> list[str]:
    """The tables a dump of this database holds rows of, schema-qualified, sorted."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(_TABLES)
    return [f"{schema}.{name}" for schema, name in await cursor.fetchall()]


async def measure(
    conn: AsyncConnection[Any], names: list[str], *, on_table: Callable[[str], None]
) -> list[TableSum]:
    """Each table's rows and checksum, as `conn` sees them (after `stable_text`)."""
    found = []
    cursor = conn.cursor(row_factory=tuple_row)
    for name in names:
        schema, _, table = name.partition(".")
        await cursor.execute(
            sql.SQL(
                "SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint)"
                ", 0) FROM {} AS t"
            ).format(sql.Identifier(schema, table))
        )
        row = await cursor.fetchone()
        assert row is not None
        found.append(TableSum(name, int(row[0]), int(row[1])))
        on_table(name)
    return found


def differences(expected: tuple[TableSum, ...], found: list[TableSum]) -> list[str]:
    """What a restore holds that the manifest does not say, table by table."""
    have = {table.table: table for table in found}
    problems = []
    for table in expected:
        got = have.pop(table.table, None)
        if got is None:
            problems.append(f"{table.table}: missing")
        elif got.rows != table.rows:
            problems.append(f"{table.table}: {got.rows} rows, the manifest says {table.rows}")
        elif got.checksum != table.checksum:
            problems.append(f"{table.table}: checksum differs ({table.rows} rows)")
    problems += [f"{name}: not in the manifest" for name in sorted(have)]
    return problems
