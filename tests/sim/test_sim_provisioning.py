"""`--create` against a stand-in for the fieldline API, and a broker that checks the passwords."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fieldline.sim import ApiAccess, FleetOptions, ProvisioningError, run_fleet
from fieldline.sim.provisioning import register_devices

from .conftest import running_mosquitto

TOKEN = "token-123"
API_KEY = "key-456"


@dataclass
class FakeApi:
    """Answers like SPEC §3a for the calls the simulator makes, and records them."""

    url: str = ""
    rotations: dict[str, int] = field(default_factory=dict)  # device id → password generation
    groups: set[str] = field(default_factory=set)
    calls: list[tuple[str, object, dict[str, str]]] = field(default_factory=list)

    def answer(self, path: str, body: object, headers: dict[str, str]) -> tuple[int, object]:
        self.calls.append((path, body, headers))
        if path == "/api/v1/auth/login":
            if body == {"username": "ops", "password": "s3cret-ops"}:
                return 200, {"access_token": TOKEN, "refresh_token": "r", "token_type": "bearer"}
            return 401, {"error": {"code": "unauthorized", "message": "bad login"}}
        if (
            headers.get("authorization") != f"Bearer {TOKEN}"
            and headers.get("x-api-key") != API_KEY
        ):
            return 401, {"error": {"code": "unauthorized", "message": "no credentials"}}
        if path == "/api/v1/groups":
            assert isinstance(body, dict)
            if body["name"] in self.groups:
                return 409, {"error": {"code": "conflict", "message": "exists"}}
            self.groups.add(body["name"])
            return 201, {"name": body["name"]}
        if path == "/api/v1/devices":
            assert isinstance(body, dict)
            device_id = body["device_id"]
            if device_id in self.rotations:
                return 409, {"error": {"code": "conflict", "message": "exists"}}
            self.rotations[device_id] = 1
            return 201, self._credentials(device_id)
        device_id = path.removeprefix("/api/v1/devices/").removesuffix("/credentials")
        if device_id not in self.rotations:
            return 404, {"error": {"code": "not_found", "message": device_id}}
        self.rotations[device_id] += 1
        return 200, self._credentials(device_id)

    def _credentials(self, device_id: str) -> dict[str, object]:
        password = f"{device_id}-pw{self.rotations[device_id]}"
        mqtt = {
            "username": device_id,
            "password": password,
            "host": "x",
            "port": 1,
            "tls_port": None,
        }
        return {"device_id": device_id, "mqtt": mqtt}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, answer = fake.answer(
                self.path,
                json.loads(raw) if raw else None,
                {k.lower(): v for k, v in self.headers.items()},
            )
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


async def test_create_registers_devices_and_reuses_the_credentials_file(
    api: FakeApi, tmp_path: Path
) -> None:
    api.rotations["sim-0002"] = 1  # registered by an earlier run: must be rotated, not recreated
    api.groups.add("farm-alpha")
    credentials = tmp_path / "credentials.json"
    allowed = {"sim-0001": "sim-0001-pw1", "sim-0002": "sim-0002-pw2"}
    with running_mosquitto(tmp_path, passwords=allowed) as broker:
        base = FleetOptions(
            devices=2,
            rate=5.0,
            duration=0.5,
            mqtt_host=broker.host,
            mqtt_port=broker.port,
            group="farm-alpha",
            credentials_file=credentials,
            api=ApiAccess(url=api.url, username="ops", password="s3cret-ops"),
        )
        created = await run_fleet(dataclasses.replace(base, create=True))
        calls_after_create = len(api.calls)
        reused = await run_fleet(base)

    assert json.loads(credentials.read_text()) == allowed
    assert oct(credentials.stat().st_mode & 0o777) == "0o600"
    for report in (created, reused):
        assert report.devices_connected == 2
        assert report.connect_failures == 0
        assert report.telemetry_ok > 0
    assert len(api.calls) == calls_after_create  # the second run never asked the API

    paths = [path for path, _, _ in api.calls]
    assert paths[:2] == ["/api/v1/auth/login", "/api/v1/groups"]
    assert sorted(paths[2:]) == [
        "/api/v1/devices",
        "/api/v1/devices",
        "/api/v1/devices/sim-0002/credentials",
    ]
    bodies = [body for path, body, _ in api.calls if path == "/api/v1/devices"]
    assert isinstance(bodies[0], dict)
    assert {"device_id", "name", "device_type", "group", "metadata"} == set(bodies[0])
    assert all(isinstance(b, dict) and b["group"] == "farm-alpha" for b in bodies)


async def test_api_key_and_refusals(api: FakeApi) -> None:
    passwords = await register_devices(
        ApiAccess(url=api.url, api_key=API_KEY), device_ids=["sim-0001"], group=None
    )
    assert passwords == {"sim-0001": "sim-0001-pw1"}
    assert api.calls[0][2]["x-api-key"] == API_KEY

    with pytest.raises(ProvisioningError, match="401"):
        await register_devices(
            ApiAccess(url=api.url, username="ops", password="wrong"),
            device_ids=["sim-0001"],
            group=None,
        )


async def test_missing_credentials_are_reported(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.json"
    credentials.write_text('{"sim-0001": "pw"}')
    with pytest.raises(ProvisioningError, match="sim-0002"):
        await run_fleet(FleetOptions(devices=2, duration=0.1, credentials_file=credentials))
