"""The commands the CLI prints are pasted into a shell as they stand: `fieldline up`'s
banner, and the command `provisioning-key create` prints, run against the running
platform with nothing filled in."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from fieldline.cli.run import _banner
from fieldline.config import Settings
from fieldline.runtime.supervisor import StartupInfo
from tests.e2e.conftest import ADMIN_PASSWORD, Platform

# What a terminal has: fieldline on the PATH, and nothing of the test's own settings.
SHELL_ENV = {
    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    "HOME": os.environ.get("HOME", "/root"),
    "FIELDLINE_ADMIN_PASSWORD": ADMIN_PASSWORD,  # as `up` was started with it
    "FIELDLINE_LOG_LEVEL": "WARNING",
}


def banner_commands(platform: Platform) -> list[str]:
    """The indented command lines of the banner, in order."""
    text = platform.log.read_text()
    banner = text[text.index("fieldline is running") : text.index("Stop with Ctrl-C.")]
    return [
        line.strip()
        for line in banner.splitlines()
        if re.match(r"  (export|fieldline|PGPASSWORD)\b", line)
    ]


def shell(script: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script],
        input=stdin,
        capture_output=True,
        text=True,
        env=SHELL_ENV,
        timeout=120,
        check=False,
    )


async def device_ids(platform: Platform) -> set[str]:
    async with platform.http() as http:
        answer = await http.get("/api/v1/devices", params={"limit": 500})
    return {d["device_id"] for d in answer.json()["items"]}


async def last_seen(platform: Platform, device_id: str) -> str | None:
    async with platform.http() as http:
        answer = await http.get(f"/api/v1/devices/{device_id}")
    seen: str | None = answer.json()["last_seen"]
    return seen


async def run_until(exports: str, command: str, done: Callable[[], Awaitable[bool]]) -> None:
    """Run `command` (a simulator, which runs until stopped) until `done`, then stop it."""
    with subprocess.Popen(
        ["bash", "-c", f"{exports}\nexec {command}"],
        env=SHELL_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            deadline = time.monotonic() + 60
            while not await done():
                if process.poll() is not None:
                    raise AssertionError(process.stderr.read() if process.stderr else command)
                assert time.monotonic() < deadline, f"not done after 60 s: {command}"
                await asyncio.sleep(0.5)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_the_banner_and_what_it_leads_to_paste_as_they_stand(platform: Platform) -> None:
    commands = banner_commands(platform)
    exports, simulate, create = commands[:3]
    assert exports.startswith("export FIELDLINE_API_URL=")
    assert f"FIELDLINE_MQTT_PORT={platform.mqtt_port}" in exports
    assert platform.api_url in exports
    assert "<" not in " ".join(commands)  # no placeholder to fill in

    # A provisioning key, then the devices command it prints: ten devices register.
    key = shell(f"{exports}\n{create}")
    assert key.returncode == 0, key.stderr
    (devices_line,) = [line for line in key.stdout.splitlines() if "fieldline simulate" in line]
    start_devices = devices_line.split("devices", 1)[1].strip()
    assert f"--api-url {platform.api_url}" in start_devices
    before = await device_ids(platform)

    async def registered() -> bool:
        return len(await device_ids(platform) - before) == 10

    await run_until(exports, start_devices, registered)

    # The simulated fleet: the same ten devices, registered again, report.
    since = (await last_seen(platform, "sim-0001")) or ""

    async def reported() -> bool:
        return ((await last_seen(platform, "sim-0001")) or "") > since

    await run_until(exports, simulate, reported)

    sql = [c for c in commands if c.startswith("PGPASSWORD")]
    if platform.variant.endswith("embedded"):  # its own database, its read-only role
        (psql,) = sql
        if shutil.which("psql") is None:
            pytest.fail("psql is not installed (apt-get install postgresql-client)")
        counted = shell(psql, stdin="SELECT count(*) AS devices FROM reporting.devices;\n")
        assert counted.returncode == 0, counted.stderr
        assert int(counted.stdout.splitlines()[2]) >= 10, counted.stdout
    else:
        assert sql == []  # an external database: its administrator's role, not up's


def banner_of(settings: Settings, *, generated: str | None) -> None:
    info = StartupInfo(
        api_url="http://127.0.0.1:8123",
        mqtt_host="127.0.0.1",
        mqtt_port=1884,
        mqtt_tls_port=None,
        broker="ManagedMosquitto",
        database="embedded PostgreSQL on 127.0.0.1:5433",
        admin_password=generated,
    )
    _banner(settings, info)


def test_a_generated_password_is_in_the_hints_and_an_unknown_one_is_said_where_to_get(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIELDLINE_ADMIN_PASSWORD", raising=False)
    settings = Settings(data_dir=tmp_path / "my data")
    (tmp_path / "my data").mkdir()
    (tmp_path / "my data" / "database.port").write_text("5433\n")

    banner_of(settings, generated="Gen-3rated_pw")
    first = capsys.readouterr().out
    assert (
        "  export FIELDLINE_API_URL=http://127.0.0.1:8123 FIELDLINE_MQTT_PORT=1884"
        " FIELDLINE_API_USERNAME=admin FIELDLINE_API_PASSWORD=Gen-3rated_pw\n"
    ) in first
    reader_secret = tmp_path / "my data" / "secrets" / "database_reader_password"
    assert (
        f"  PGPASSWORD=\"$(cat '{reader_secret}')\" psql -h 127.0.0.1 -p 5433"
        " -U fieldline_reader fieldline\n"
    ) in first  # a path with a space, quoted

    banner_of(settings, generated=None)
    later = capsys.readouterr().out
    assert "FIELDLINE_API_PASSWORD" not in later.split("export ", 1)[1].splitlines()[0]
    assert f"fieldline user passwd admin --data-dir '{tmp_path / 'my data'}'" in later
