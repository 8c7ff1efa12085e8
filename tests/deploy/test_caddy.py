"""The front door of deploy/: a real Caddy (Debian's package) with its internal CA
terminates TLS in front of a running `fieldline api`, configured by deploy/Caddyfile.

Through it, over HTTPS trusting Caddy's local root: the dashboard, the API, a server-sent
event stream delivered as it happens (not held in a proxy buffer), and each client's own
address reaching fieldline (FIELDLINE_TRUSTED_PROXIES names the proxy). The clients
connect from other loopback addresses (127.0.0.2, 127.0.0.3) than the one Caddy reaches
the API from (127.0.0.1), so "the proxy's address" and "the client's" differ."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fieldline.ops.sockets import free_port
from tests.deploy.conftest import DEPLOY
from tests.deployment import ADMIN_PASSWORD, Deployment, MosquittoServer, running

pytestmark = [pytest.mark.usefixtures("mosquitto_installed"), pytest.mark.timeout(180)]

PROXY = "127.0.0.1"  # where Caddy's connections to the API come from
GUESSER = "127.0.0.2"
USER = "127.0.0.3"


@dataclass
class FrontDoor:
    url: str
    ca: Path  # Caddy's local CA: root.crt is what clients trust
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def caddy_in_front(caddy: str, directory: Path, upstream_port: int) -> Iterator[FrontDoor]:
    """deploy/Caddyfile behind a global block for a test: free ports, Caddy's own CA
    (`local_certs`) and storage in `directory`, no admin endpoint. Yields the site's
    URL and the CA's root certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    https_port = free_port("127.0.0.1")
    storage = directory / "data"
    config = directory / "Caddyfile"
    config.write_text(
        "{\n"
        "\tadmin off\n"
        f"\thttp_port {free_port('127.0.0.1')}\n"
        f"\thttps_port {https_port}\n"
        "\tlocal_certs\n"
        "\tskip_install_trust\n"
        "\tauto_https disable_redirects\n"
        f"\tstorage file_system {storage}\n"
        "\tservers {\n\t\tprotocols h1 h2\n\t}\n"
        "}\n\n" + (DEPLOY / "Caddyfile").read_text()
    )
    env = {
        **os.environ,
        "HOME": str(directory),
        "XDG_DATA_HOME": str(directory / "xdg-data"),
        "XDG_CONFIG_HOME": str(directory / "xdg-config"),
        # The site: an address Caddy's internal CA certifies, then where the API is.
        "FIELDLINE_DOMAIN": "127.0.0.1",
        "FIELDLINE_UPSTREAM": f"127.0.0.1:{upstream_port}",
    }
    log = (directory / "caddy.log").open("ab")
    process = subprocess.Popen(
        [caddy, "run", "--adapter", "caddyfile", "--config", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        yield FrontDoor(
            f"https://127.0.0.1:{https_port}",
            storage / "pki" / "authorities" / "local",
            process,
            directory / "caddy.log",
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@asynccontextmanager
async def https_client(url: str, ca: Path, source: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client from the loopback address `source`, trusting only Caddy's root."""
    context = ssl.create_default_context(cafile=str(ca / "root.crt"))
    transport = httpx.AsyncHTTPTransport(verify=context, local_address=source)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as client:
        yield client


async def wait_for_front_door(door: FrontDoor) -> None:
    """Until Caddy has made its CA and certificate and answers /health through the proxy."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if (door.ca / "root.crt").exists():
                async with https_client(door.url, door.ca, USER) as client:
                    if (await client.get("/health")).status_code == 200:
                        return
        except (httpx.TransportError, ssl.SSLError):
            pass
        if door.process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"Caddy does not serve:\n{door.log.read_text()[-3000:]}")
        await asyncio.sleep(0.2)


async def next_event(lines: AsyncIterator[str]) -> tuple[str, dict[str, Any]]:
    """The next server-sent event's name and JSON data (comments skipped)."""
    name, data = "", ""
    async for line in lines:
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data += line.split(":", 1)[1].strip()
        elif not line and data:
            return name, json.loads(data)
    raise AssertionError("the stream ended")


async def test_fieldline_behind_caddy(workdir: Path, pg15_database_url: str, caddy: str) -> None:
    broker = MosquittoServer(workdir / "mosquitto")
    await broker.start()
    deployment = Deployment(
        workdir,
        pg15_database_url,
        broker,
        extra_env={
            "FIELDLINE_TRUSTED_PROXIES": PROXY,
            "FIELDLINE_AUTH_MAX_FAILURES_PER_ADDRESS": "2",
        },
    )
    with (
        running(deployment),
        caddy_in_front(caddy, workdir / "caddy", deployment.api_port) as door,
    ):
        await deployment.start_api()
        await wait_for_front_door(door)
        url, ca = door.url, door.ca

        async with https_client(url, ca, USER) as user:
            # The dashboard, with its policy, and HSTS because it went out over HTTPS.
            page = await user.get("/")
            assert page.status_code == 200
            assert "<title>fieldline</title>" in page.text
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert page.headers["strict-transport-security"] == "max-age=31536000"
            script = await user.get("/ui/js/app.js")
            assert script.status_code == 200

            # Never over plain HTTP: the API asked directly, without a proxy's word.
            async with httpx.AsyncClient(base_url=deployment.api_url) as plain:
                direct = await plain.get("/")
            assert direct.status_code == 200
            assert "strict-transport-security" not in direct.headers

            # The API: sign in, register a device, read it back.
            login = await user.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            assert login.status_code == 200, login.text
            admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
            created = await user.post(
                "/api/v1/devices", json={"device_id": "behind-caddy-1"}, headers=admin
            )
            assert created.status_code == 201, created.text
            device = await user.get("/api/v1/devices/behind-caddy-1", headers=admin)
            assert device.status_code == 200
            assert device.json()["device_id"] == "behind-caddy-1"

            # Server-sent events: the fleet's summary when the stream opens, and again as
            # soon as it changes while the stream stays open. A buffering proxy would hold
            # these few hundred bytes back, and the second event would never come.
            async with user.stream("GET", "/api/v1/fleet/stream", headers=admin) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.aiter_lines()
                name, summary = await next_event(lines)
                assert name == "summary"
                assert summary["devices"]["total"] == 1
                another = await user.post(
                    "/api/v1/devices", json={"device_id": "behind-caddy-2"}, headers=admin
                )
                assert another.status_code == 201
                while summary["devices"]["total"] != 2:
                    name, summary = await next_event(lines)
                    assert name == "summary"

            # The real client address: one guesser behind the proxy is held up by the
            # per-address limit, not everyone behind it, and the audit log names it.
            async with https_client(url, ca, GUESSER) as guesser:
                statuses = []
                for attempt in range(4):
                    answer = await guesser.post(
                        "/api/v1/auth/login",
                        json={"username": f"guess-{attempt}", "password": "wrong-password"},
                    )
                    statuses.append(answer.status_code)
                assert statuses[:2] == [401, 401], statuses
                assert 429 in statuses, statuses
            again = await user.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            assert again.status_code == 200, again.text
            audit = await user.get(
                "/api/v1/audit", params={"action": "auth.lockout"}, headers=admin
            )
            assert audit.status_code == 200, audit.text
            actors = {entry["actor"] for entry in audit.json()["items"]}
            assert actors == {f"address:{GUESSER}"}, actors
