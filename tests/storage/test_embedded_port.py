"""The embedded database keeps its port across restarts (Grafana and psql stay pointed at
it), moves when something else took it, and takes the one configured."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import psycopg
import pytest

from fieldline.config import Settings
from fieldline.ops.sockets import free_port
from fieldline.storage.embedded import served_database


async def port_of(settings: Settings) -> int:
    async with served_database(settings) as db:
        with psycopg.connect(db.url) as conn:  # it answers there
            assert conn.execute("SELECT 1").fetchone() == (1,)
        return int(db.url.rsplit(":", 1)[1].split("/")[0])


@pytest.mark.timeout(180)
async def test_the_embedded_database_keeps_its_port() -> None:
    # Not under pytest's temporary root, which the server's own user cannot traverse.
    with tempfile.TemporaryDirectory(prefix="fieldline-port-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data")
        settings.data_dir.mkdir(mode=0o700)  # as `fieldline up` makes it
        first = await port_of(settings)
        assert (settings.data_dir / "database.port").read_text().strip() == str(first)
        assert await port_of(settings) == first

        with socket.socket() as squatter:  # another program took the port meanwhile
            # (past the server's connections still in TIME_WAIT on it, as a server would)
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", first))
            squatter.listen()
            moved = await port_of(settings)
        assert moved != first
        assert (settings.data_dir / "database.port").read_text().strip() == str(moved)

        chosen = free_port("127.0.0.1")
        configured = settings.model_copy(update={"database_port": chosen})
        assert await port_of(configured) == chosen
