"""Firmware images: their records and their bytes, in pieces (migration 0023).

An image is written in one transaction with its record, so a reader sees it whole or
not at all. Its bytes are kept as CHUNK_BYTES pieces: an upload, a download and a
Range request each hold one piece at a time, whatever the image's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.rows import tuple_row

from fieldline.domain.firmware import Image
from fieldline.storage.db import Row
from fieldline.storage.errors import AlreadyExistsError, InUseError, NotFoundError
from fieldline.storage.paging import Page, decode_cursor, encode_cursor

Conn = AsyncConnection[Row]

# 256 KiB: a 2 MB image is 8 rows; a Range request of a few KiB reads one piece's slice.
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Firmware:
    id: int
    device_model: str
    version: str
    sha256: str
    size_bytes: int
    signature: str
    key_id: str
    release_notes: str
    uploaded_at: datetime
    uploaded_by: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Firmware:
        """From the row as JSON (`to_jsonb`): its times as text."""
        return cls(**{**row, "uploaded_at": datetime.fromisoformat(row["uploaded_at"])})

    @property
    def image(self) -> Image:
        return Image(self.device_model, self.version, self.sha256, self.size_bytes)


async def create(
    conn: Conn,
    image: Image,
    *,
    source: BinaryIO,
    signature: str,
    key_id: str,
    release_notes: str,
    uploaded_by: str | None,
) -> Firmware:
    """Store the image read from `source` (already hashed: `image` says what it holds)."""
    async with conn.transaction():
        try:
            cursor = await conn.execute(
                "INSERT INTO firmware (device_model, version, sha256, size_bytes, signature,"
                " key_id, release_notes, uploaded_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING *",
                (
                    image.device_model,
                    image.version,
                    image.sha256,
                    image.size_bytes,
                    signature,
                    key_id,
                    release_notes,
                    uploaded_by,
                ),
            )
        except UniqueViolation as exc:
            raise AlreadyExistsError(
                f"firmware {image.version} of {image.device_model} exists already"
            ) from exc
        row = await cursor.fetchone()
        assert row is not None
        firmware = Firmware(**row)
        seq = 0
        async with conn.cursor() as chunks:
            while piece := source.read(CHUNK_BYTES):
                await chunks.execute(
                    "INSERT INTO firmware_chunks (firmware_id, seq, data) VALUES (%s, %s, %s)",
                    (firmware.id, seq, piece),
                )
                seq += 1
    return firmware


async def get(conn: Conn, device_model: str, version: str) -> Firmware:
    row = await (
        await conn.execute(
            "SELECT * FROM firmware WHERE device_model = %s AND version = %s",
            (device_model, version),
        )
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no firmware {version} of {device_model}")
    return Firmware(**row)


async def get_by_id(conn: Conn, firmware_id: int) -> Firmware:
    row = await (
        await conn.execute("SELECT * FROM firmware WHERE id = %s", (firmware_id,))
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no firmware {firmware_id}")
    return Firmware(**row)


async def list_firmware(
    conn: Conn, device_model: str | None = None, *, limit: int = 1000, cursor: str | None = None
) -> Page[Firmware]:
    """Images (of one model, or all), newest first, a page at a time."""
    after = decode_cursor(cursor, 1)
    rows = await (
        await conn.execute(
            "SELECT * FROM firmware WHERE (%(model)s::text IS NULL OR device_model = %(model)s)"
            " AND (%(after)s::bigint IS NULL OR id < %(after)s) ORDER BY id DESC LIMIT %(n)s",
            {"model": device_model, "after": after[0] if after else None, "n": limit + 1},
        )
    ).fetchall()
    items = [Firmware(**row) for row in rows[:limit]]
    return Page(items, encode_cursor(items[-1].id) if len(rows) > limit else None)


async def delete(conn: Conn, device_model: str, version: str) -> Firmware:
    """Remove an image no unfinished rollout uses (a finished one's record goes with it)."""
    async with conn.transaction():
        firmware = await get(conn, device_model, version)
        busy = await (
            await conn.execute(
                "SELECT id FROM rollouts WHERE firmware_id = %s"
                " AND state IN ('running', 'paused') ORDER BY id",
                (firmware.id,),
            )
        ).fetchall()
        if busy:
            ids = ", ".join(str(row["id"]) for row in busy)
            raise InUseError(f"rollout {ids} still uses firmware {version} of {device_model}")
        await conn.execute("DELETE FROM rollouts WHERE firmware_id = %s", (firmware.id,))
        await conn.execute("DELETE FROM firmware WHERE id = %s", (firmware.id,))
    return firmware


async def read_piece(conn: AsyncConnection[Any], firmware_id: int, seq: int) -> bytes:
    """Piece `seq` of the image (CHUNK_BYTES long, but the last)."""
    cursor = conn.cursor(row_factory=tuple_row, binary=True)
    await cursor.execute(
        "SELECT data FROM firmware_chunks WHERE firmware_id = %s AND seq = %s", (firmware_id, seq)
    )
    row = await cursor.fetchone()
    if row is None:
        raise NotFoundError(f"firmware {firmware_id} has no piece {seq}")
    return bytes(row[0])
