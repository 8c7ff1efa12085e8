"""uvicorn on a socket bound beforehand, stopped with the rest of the process."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from fieldline.api.app import create_app
from fieldline.api.context import ApiContext

HTTP_GRACE_SECONDS = 5.0  # for requests under way


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says TCP, and without it every small answer on a kept-alive
    # connection waited ~40 ms for the client's delayed ACK (uvicorn issue 3149).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def local_url(host: str, port: int) -> str:
    """The URL a user on this machine reaches `host:port` at (a wildcard is loopback)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


class HttpServer:
    """uvicorn on a socket bound beforehand (so port 0 is known before serving)."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        on_stopping: Callable[[], None] | None = None,
        after_stop: Callable[[], Awaitable[None]] | None = None,
        trusted_proxies: str = "",
    ) -> None:
        self.socket = bind_socket(host, port)
        self.port: int = self.socket.getsockname()[1]
        # No ASGI lifespan: what requests started is released by `after_stop`, once
        # uvicorn has stopped serving (a lifespan task cancelled at Ctrl-C logs an error).
        # X-Forwarded-For is believed only from `trusted_proxies` (none by default, not
        # uvicorn's loopback): the failed-credential limits count by the client address.
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=int(HTTP_GRACE_SECONDS),
                proxy_headers=bool(trusted_proxies),
                forwarded_allow_ips=trusted_proxies or None,
            )
        )
        self._on_stopping = on_stopping
        self._after_stop = after_stop

    async def serve(self, stopping: asyncio.Event) -> None:
        async def stop_on_signal() -> None:
            # uvicorn may take the signal itself: watch for its flag too.
            while not (stopping.is_set() or self._server.should_exit):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 0.2)
            self._server.should_exit = True
            if self._on_stopping is not None:
                # uvicorn waits for open requests; long-lived ones (event streams) end now.
                self._on_stopping()

        watcher = asyncio.create_task(stop_on_signal(), name="http-stop")
        try:
            await self._server.serve(sockets=[self.socket])
        finally:
            stopping.set()  # uvicorn may have taken the signal itself
            watcher.cancel()
            if self._after_stop is not None:
                await self._after_stop()

    async def wait_started(self) -> None:
        # uvicorn offers no event for "started".
        while not self._server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def api_server(context: ApiContext) -> HttpServer:
    """The HTTP API on its configured address; open event streams end when it stops."""
    settings = context.settings
    return HttpServer(
        create_app(context),
        settings.http_host,
        settings.http_port,
        on_stopping=context.closing.set,
        after_stop=context.close,
        trusted_proxies=settings.trusted_proxies,
    )
