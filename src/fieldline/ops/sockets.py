"""Loopback port helpers shared by the servers fieldline starts (broker, database)."""

from __future__ import annotations

import asyncio
import contextlib
import socket


def free_port(host: str) -> int:
    """A port nothing listens on right now, for `port = 0` settings."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on `host:port` (so a server we start cannot)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


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
