"""A backup brings an instance back: `fieldline up` on the embedded database, devices,
telemetry and users added through the API, `fieldline backup create` beside it; then
`fieldline restore` into a new data directory, and a `fieldline up` there answers the API
exactly as the first did, to the same signed-in session."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backup.test_cli import fieldline
from tests.e2e.conftest import Platform, start_platform, stop_platform

DEVICES = ("freezer-1", "freezer-2", "van-3")


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fieldline-restore-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def seed(platform: Platform) -> tuple[float, float]:
    """Devices, an hour of readings each (through the device HTTP API) and two users; answer
    the time range they span."""
    headers = platform.headers
    now = time.time()
    for n, device_id in enumerate(DEVICES):
        answer = httpx.post(
            f"{platform.api_url}/api/v1/devices",
            json={"device_id": device_id, "name": f"Device {n}", "metadata": {"site": "depot"}},
            headers=headers,
        )
        assert answer.status_code == 201, answer.text
        readings = [
            {"timestamp": now - 3600 + i * 60, "sensors": {"temperature": -18.5 + n + i / 10}}
            for i in range(60)
        ]
        sent = httpx.post(
            f"{platform.api_url}/api/v1/devices/{device_id}/telemetry",
            json={"readings": readings},
            auth=(device_id, answer.json()["mqtt"]["password"]),
            timeout=30,
        )
        assert sent.status_code == 202 and sent.json()["accepted"] == 60, sent.text
    image = httpx.post(
        f"{platform.api_url}/api/v1/firmware",
        data={"device_model": "freezer-ctl", "version": "3.1.0"},
        files={"file": ("freezer.bin", bytes(range(256)) * 1200, "application/octet-stream")},
        headers=headers,
    )
    assert image.status_code == 201, image.text
    for name, role in (("olga", "operator"), ("vic", "viewer")):
        made = httpx.post(
            f"{platform.api_url}/api/v1/users",
            json={"username": name, "password": f"{name}-password-long", "role": role},
            headers=headers,
        )
        assert made.status_code == 201, made.text
    return now - 7200, now + 60


def answers(platform: Platform, headers: dict[str, str], start: float, end: float) -> Any:
    """What the API says about the instance's devices, telemetry and users."""
    paths = [
        "/api/v1/devices",
        "/api/v1/users",
        "/api/v1/telemetry/latest",
        "/api/v1/firmware",  # its images, signed by the key the backup holds
        "/api/v1/firmware/keys",
        *(f"/api/v1/devices/{d}" for d in DEVICES),
        *(f"/api/v1/devices/{d}/telemetry/latest" for d in DEVICES),
        *(
            f"/api/v1/devices/{d}/telemetry?metric=temperature&start={start}&end={end}"
            for d in DEVICES
        ),
        *(
            f"/api/v1/devices/{d}/telemetry?metric=temperature&start={start}&end={end}"
            "&bucket=10m&agg=avg"
            for d in DEVICES
        ),
    ]
    found = {}
    for path in paths:
        answer = httpx.get(platform.api_url + path, headers=headers, timeout=30)
        assert answer.status_code == 200, (path, answer.text)
        found[path] = answer.json()
    return found


def test_a_restored_instance_answers_the_api_as_before(root: Path) -> None:
    kept = {"FIELDLINE_BACKUP_URL": str(root / "backups")}
    first = start_platform("backed-up", {}, root / "first")
    try:
        start, end = seed(first)
        before = answers(first, first.headers, start, end)
        assert len(before["/api/v1/devices"]["items"]) == 3
        points = before[f"/api/v1/devices/{DEVICES[0]}/telemetry?metric=temperature"
                        f"&start={start}&end={end}"]["points"]  # fmt: skip
        assert len(points) == 60

        # Beside the running `up`, on its database, as an operator runs it.
        created = fieldline("backup", "create", "--data-dir", str(first.data_dir), env=kept)
        assert created.returncode == 0, created.stderr
        secrets = (  # what `up` made
            "secrets/database_reader_password, secrets/firmware_signing_key.pem, secrets/secret_key"
        )
        assert f"with {secrets} (keep this location private)" in created.stdout
        listed = fieldline("backup", "list", "--data-dir", str(first.data_dir), env=kept)
        assert listed.stdout.count(" complete") == 1, listed.stdout
        verified = fieldline("backup", "verify", "--data-dir", str(first.data_dir), env=kept)
        assert verified.returncode == 0 and " verified: " in verified.stdout, verified.stderr
    finally:
        assert stop_platform(first) == 0

    second_dir = root / "second"
    restored = fieldline("restore", str(root / "backups"), "--data-dir", str(second_dir), env={})
    assert restored.returncode == 0, restored.stderr
    assert restored.stderr == ""  # its new server stopped cleanly, nothing else to say
    assert "into a new embedded PostgreSQL in" in restored.stdout
    assert (
        f"and into {second_dir}: secrets/database_reader_password,"
        " secrets/firmware_signing_key.pem, secrets/secret_key" in restored.stdout
    )

    shutil.rmtree(first.data_dir)  # nothing of the first instance is left to lean on
    second = start_platform("restored", {}, second_dir)
    try:
        # The session signed in on the first instance is valid here: its key came back.
        assert answers(second, first.headers, start, end) == before
        # Not over the instance now running there.
        again = fieldline("restore", str(root / "backups"), "--data-dir", str(second_dir), env={})
        assert again.returncode == 1 and "Traceback" not in again.stderr
        assert "Error: the database is not empty" in again.stderr
    finally:
        assert stop_platform(second) == 0
