"""A firmware image downloaded in Range requests from a real local HTTP server whose link
drops: the download resumes from the bytes it holds and ends with the image's sha256."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from fieldline.sim.download import MAX_ATTEMPTS, DownloadFailed, download_image

IMAGE = os.urandom(300_000)
CHUNK = 64 * 1024


@dataclass
class ImageServer:
    """Serves IMAGE at /image with Range, as the platform's binary endpoint does.

    `cut_first` answers the first `len(cut_first)` requests with only that many bytes of
    the range asked and then closes the connection (a link that drops mid-transfer);
    `ignore_range` answers 200 with the whole image; `status` answers every request so.
    """

    cut_first: list[int] = field(default_factory=list)
    ignore_range: bool = False
    status: int | None = None
    ranges: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await self._answer(head.decode("latin-1"), writer)
        except (asyncio.IncompleteReadError, ConnectionError, _Dropped):
            pass
        finally:
            writer.close()

    async def _answer(self, head: str, writer: asyncio.StreamWriter) -> None:
        asked = re.search(r"(?im)^range: bytes=(\d+)-(\d+)\s*$", head)
        self.ranges.append(f"{asked.group(1)}-{asked.group(2)}" if asked else "")
        if self.status is not None:
            writer.write(f"HTTP/1.1 {self.status} Nope\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            return
        if asked is None or self.ignore_range:
            start, end, status = 0, len(IMAGE) - 1, "200 OK"
        else:
            start, end = int(asked.group(1)), min(int(asked.group(2)), len(IMAGE) - 1)
            status = "206 Partial Content"
        body = IMAGE[start : end + 1]
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nAccept-Ranges: bytes\r\n"
            f"Content-Range: bytes {start}-{end}/{len(IMAGE)}\r\n\r\n".encode()
        )
        if self.cut_first:
            part = body[: self.cut_first.pop(0)]
            writer.write(part)
            self.bytes_sent += len(part)
            await writer.drain()
            raise _Dropped
        writer.write(body)
        self.bytes_sent += len(body)
        await writer.drain()


class _Dropped(Exception):
    pass


@pytest.fixture
async def server() -> AsyncIterator[ImageServer]:
    image_server = ImageServer()
    listening = await asyncio.start_server(image_server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    image_server.url = f"http://127.0.0.1:{port}/image"
    async with listening:
        yield image_server


async def download(server: ImageServer, into: bytearray | None = None, **kwargs: object) -> bytes:
    image = bytearray() if into is None else into
    async with httpx.AsyncClient(timeout=10) as http:
        await download_image(
            http,
            server.url,
            size=len(IMAGE),
            into=image,
            chunk_size=CHUNK,
            retry_start=0.01,
            **kwargs,  # type: ignore[arg-type]
        )
    return bytes(image)


async def test_an_image_arrives_in_range_requests_of_the_chunk_size(server: ImageServer) -> None:
    image = await download(server)

    assert hashlib.sha256(image).hexdigest() == hashlib.sha256(IMAGE).hexdigest()
    assert server.ranges == [
        f"{start}-{min(start + CHUNK, len(IMAGE)) - 1}" for start in range(0, len(IMAGE), CHUNK)
    ]


async def test_a_download_cut_midway_resumes_from_the_bytes_it_holds(server: ImageServer) -> None:
    # The first request's connection drops after 10,000 of its bytes, the next after 5,000.
    server.cut_first = [10_000, 5_000]
    progress: list[int] = []

    image = await download(server, on_progress=progress.append)

    assert hashlib.sha256(image).hexdigest() == hashlib.sha256(IMAGE).hexdigest()
    assert server.ranges[:3] == [
        f"0-{CHUNK - 1}",
        f"10000-{10_000 + CHUNK - 1}",
        f"15000-{15_000 + CHUNK - 1}",
    ]
    # Nothing that arrived was asked for again.
    assert server.bytes_sent == len(IMAGE)
    assert progress == sorted(progress) and progress[-1] == len(IMAGE)


async def test_a_download_continues_from_bytes_held_before(server: ImageServer) -> None:
    held = bytearray(IMAGE[:100_000])

    image = await download(server, into=held)

    assert image == IMAGE
    assert server.ranges[0] == f"100000-{100_000 + CHUNK - 1}"
    assert server.bytes_sent == len(IMAGE) - 100_000


async def test_a_simulated_cut_drops_the_link_once_and_the_download_resumes(
    server: ImageServer,
) -> None:
    image = await download(server, cut_at=150_000)

    assert image == IMAGE
    resumed_at = [int(r.split("-")[0]) for r in server.ranges]
    # The request after the cut starts where the bytes held end, not at a chunk boundary.
    assert any(start % CHUNK for start in resumed_at), server.ranges
    assert all(start >= 150_000 for start in resumed_at if start % CHUNK), server.ranges
    # The cut costs only the bytes in flight, never the image so far.
    assert len(IMAGE) <= server.bytes_sent < len(IMAGE) + CHUNK


async def test_a_server_that_ignores_range_still_gives_the_image(server: ImageServer) -> None:
    server.ignore_range = True

    assert await download(server) == IMAGE
    assert len(server.ranges) == 1


@pytest.mark.parametrize("status", [401, 404, 416])
async def test_a_refusal_ends_the_download_at_once(server: ImageServer, status: int) -> None:
    server.status = status

    with pytest.raises(DownloadFailed, match=f"HTTP {status}"):
        await download(server)
    assert len(server.ranges) == 1


@pytest.mark.parametrize("status", [403, 503])
async def test_a_link_that_never_gives_a_byte_gives_up(server: ImageServer, status: int) -> None:
    server.status = status

    with pytest.raises(DownloadFailed, match=f"HTTP {status}"):
        await download(server)
    assert len(server.ranges) == MAX_ATTEMPTS
