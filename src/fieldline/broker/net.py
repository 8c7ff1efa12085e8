"""Small socket helpers the broker adapters share."""

from __future__ import annotations

import asyncio
import contextlib
import socket


def free_port(host: str) -> int:
    """A port nothing listens on right now, for `port = 0` settings."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def accepts_connections(host: str, port: int, within: float = 1.0) -> bool:
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
