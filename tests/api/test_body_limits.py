"""No request makes the API read more of a body than the route's limit (issue 12).

In process, the test counts how much of the body the API pulled; against a real
`fieldline up`, it sends 100 MB over a socket and reads the server's memory from /proc.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fieldline.api.app import create_app
from tests.api.conftest import ADMIN_PASSWORD, Api, platform_on_pg15
from tests.api.test_auth_and_roles import assert_error
from tests.conftest import PgServer
from tests.e2e.conftest import Platform

MiB = 1024 * 1024
BODY = 100 * MiB
CHUNK = 64 * 1024


@dataclass
class Counted:
    """A body streamed to the server chunk by chunk, counting what the server pulled."""

    size: int
    pulled: int = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        chunk = b'{"username": "' + b"a" * (CHUNK - 14)
        while self.pulled < self.size:
            self.pulled += len(chunk)
            yield chunk
            chunk = b"a" * CHUNK


ROUTES = [
    pytest.param("/api/v1/auth/login", False, id="login-unauthenticated"),
    pytest.param("/api/v1/devices", True, id="register-device"),
]


@pytest.mark.parametrize(("path", "signed_in"), ROUTES)
async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    api: Api, admin: dict[str, str], path: str, signed_in: bool
) -> None:
    body = Counted(BODY)
    headers = {"Content-Length": str(BODY), "Content-Type": "application/json"}
    answer = await api.http.post(
        path, content=body.chunks(), headers={**headers, **(admin if signed_in else {})}
    )
    assert_error(answer, 413, "payload_too_large")
    assert str(MiB) in answer.json()["error"]["message"]
    assert body.pulled == 0


@pytest.mark.parametrize(("path", "signed_in"), ROUTES)
async def test_a_streamed_body_is_cut_off_past_the_limit(
    api: Api, admin: dict[str, str], path: str, signed_in: bool
) -> None:
    body = Counted(BODY)  # no Content-Length: sent chunked
    answer = await api.http.post(
        path, content=body.chunks(), headers={**(admin if signed_in else {})}
    )
    assert_error(answer, 413, "payload_too_large")
    assert body.pulled <= MiB + CHUNK


async def test_the_limit_is_a_setting_and_bodies_under_it_are_read(api: Api) -> None:
    settings = api.context.settings.model_copy(update={"max_request_body_bytes": 4096})
    transport = httpx.ASGITransport(app=create_app(api.context.with_settings(settings)))
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldline") as http:
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        assert (await http.post("/api/v1/auth/login", json=login)).status_code == 200
        padded = {**login, "padding": "x" * 4096}
        assert_error(await http.post("/api/v1/auth/login", json=padded), 413, "payload_too_large")


async def test_http_ingest_keeps_its_own_limit(api: Api, admin: dict[str, str]) -> None:
    """Its limit is FIELDLINE_MAX_PAYLOAD_BYTES, and even a body declared 100 MB long is read
    that far: the first bytes of a too-large message are kept in the rejected store."""
    created = await api.http.post("/api/v1/devices", json={"device_id": "big-1"}, headers=admin)
    password = created.json()["mqtt"]["password"]
    limit = api.context.settings.max_payload_bytes
    body = Counted(BODY)
    answer = await api.http.post(
        "/api/v1/devices/big-1/telemetry",
        content=body.chunks(),
        headers={"Content-Length": str(BODY)},
        auth=("big-1", password),
    )
    assert_error(answer, 413, "too_large")
    assert body.pulled <= limit + CHUNK
    kept = (await api.http.get("/api/v1/rejected", headers=admin)).json()["items"]
    assert [item["size_bytes"] for item in kept] == [limit]


# Against a real server: the body arrives over a socket, the memory is the process's.


@pytest.fixture(scope="module")
def platform(pg15: PgServer) -> Iterator[Platform]:
    with platform_on_pg15(pg15, "body-limits", {"FIELDLINE_BROKER": "amqtt"}) as running:
        yield running


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def post_100_mb(url: str, path: str, headers: dict[str, str], *, declared: bool) -> dict[str, str]:
    """POST 100 MB of one JSON string, streamed (the test holds 64 KiB of it at a time),
    while another thread reads the answer; answer its status line and JSON body."""
    host, port = url.removeprefix("http://").split(":")
    framing = {"Content-Length": str(BODY)} if declared else {"Transfer-Encoding": "chunked"}
    head = "".join(
        f"{name}: {value}\r\n"
        for name, value in {
            "Host": host,
            "Content-Type": "application/json",
            **headers,
            **framing,
        }.items()
    )
    answer = bytearray()
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        reader = threading.Thread(target=_read_all, args=(sock, answer))
        reader.start()
        try:
            sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode())
            sent = 0
            chunk = b"a" * CHUNK
            while sent < BODY:
                sock.sendall(chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: the rest is not wanted
        reader.join(timeout=60)
    status, _, rest = bytes(answer).partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return {"status": status.decode(), "body": body.decode()}


def _read_all(sock: socket.socket, into: bytearray) -> None:
    try:
        while data := sock.recv(65536):
            into += data
    except (ConnectionResetError, TimeoutError):
        pass


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_100_mb_bodies_do_not_grow_the_servers_memory(platform: Platform, declared: bool) -> None:
    pid = platform.process.pid
    before = rss_bytes(pid)
    for path, headers in (
        ("/api/v1/auth/login", {}),
        ("/api/v1/devices", platform.headers),
    ):
        answer = post_100_mb(platform.api_url, path, headers, declared=declared)
        assert answer["status"].startswith("HTTP/1.1 413 "), answer
        assert json.loads(answer["body"])["error"]["code"] == "payload_too_large"
    grown = rss_bytes(pid) - before
    # Reading even one of the bodies whole would grow it by more than 100 MB.
    assert grown < 32 * MiB, f"the server grew by {grown / MiB:.0f} MiB"
    assert httpx.get(f"{platform.api_url}/health").status_code == 200
