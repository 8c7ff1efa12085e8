"""A webhook receiver for the benchmarks: records each POST's arrival time and JSON body.

A bare asyncio HTTP/1.1 server (keep-alive, Content-Length bodies, answers 204), so
that what it measures is fieldline's delivery, not a web framework's overhead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Delivery:
    arrived: float  # wall clock (time.time())
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]
    raw: bytes  # as received, for checking a signature


@dataclass
class WebhookReceiver:
    host: str = "127.0.0.1"
    port: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                arrived = time.time()
                with contextlib.suppress(ValueError):
                    self.deliveries.append(Delivery(arrived, headers, json.loads(body), body))
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
