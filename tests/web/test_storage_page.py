"""The dashboard's Storage page in headless Chromium, as a viewer sees it: the database's
size and disk, its three tiers, and the devices with the most points once the worker has
counted them.

The page shows the whole instance, so this module runs a `fieldline up` of its own rather
than the shared one, whose other tests add devices of their own; and on the embedded
database, whose disk fieldline can see and which `fieldline worker --once --data-dir`
finds as an operator runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import start_platform, stop_platform
from tests.web.conftest import Platform, create_user, sign_in

SIZE = r"\d+(\.\d)? [kMGT]?B"


@pytest.fixture(scope="module")
def embedded() -> Iterator[Platform]:
    tmp = Path(tempfile.mkdtemp(prefix="fieldline-web-storage-"))
    running = start_platform(
        "web-storage", {"FIELDLINE_ARCHIVE_URL": str(tmp / "archive")}, tmp / "data"
    )
    try:
        yield running
    finally:
        code = stop_platform(running)
        shutil.rmtree(tmp, ignore_errors=True)
        assert code == 0, f"fieldline up exited {code} on SIGTERM"


def store(platform: Platform, device_id: str, readings: int, ago: float = 0) -> None:
    """Register the device and send it `readings` readings of two metrics each, the newest
    `ago` seconds old."""
    url = f"{platform.api_url}/api/v1/devices"
    answer = httpx.post(url, json={"device_id": device_id}, headers=platform.headers)
    assert answer.status_code == 201, answer.text
    now = time.time() - ago
    sent = [
        {"timestamp": now - i, "sensors": {"temperature": 20.0, "humidity": 50.0}}
        for i in range(readings)
    ]
    answer = httpx.post(
        f"{url}/{device_id}/telemetry",
        json={"readings": sent},
        auth=(device_id, answer.json()["mqtt"]["password"]),
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == readings, answer.text


def run_job(platform: Platform, job: str) -> None:
    """`fieldline worker --once --job <job>` beside the running `up`, as an operator runs it."""
    args = ("worker", "--once", "--job", job, "--data-dir", str(platform.data_dir))
    ran = subprocess.run(
        [sys.executable, "-m", "fieldline", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "FIELDLINE_LOG_LEVEL": "WARNING",
            "FIELDLINE_ARCHIVE_URL": str(platform.data_dir.parent / "archive"),
        },
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(f"{job}: "), ran.stdout
    assert "skipped" not in ran.stdout, ran.stdout


def test_a_viewer_sees_the_tiers_the_disk_and_the_busiest_devices(
    page: Page, embedded: Platform
) -> None:
    # Named so that the busier device sorts second by id: the page must keep the API's order.
    suffix = uuid.uuid4().hex[:8]
    busy, quiet = f"pump-{suffix}", f"gate-{suffix}"
    store(embedded, busy, 30)
    store(embedded, quiet, 3)
    run_job(embedded, "retention")
    run_job(embedded, "storage_accounting")

    username, password = create_user(embedded, "viewer")
    sign_in(page, embedded, username, password)
    expect(page.locator("main h1")).to_be_visible()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Storage").click()
    expect(page.get_by_role("heading", name="Storage", level=1)).to_be_visible()

    database = page.locator("section.card").filter(has=page.get_by_role("heading", name="Database"))
    expect(database).to_contain_text(re.compile(rf"Size\s*{SIZE}"))
    expect(database).to_contain_text(re.compile(rf"Disk\s*{SIZE} free of {SIZE}"))
    # Both measurements are seconds old: too recent to tell a growth rate.
    expect(database).to_contain_text("the worker has not measured the database for an hour yet")

    tiers = page.get_by_role("table", name="Tiers").locator("tbody tr")
    expect(tiers.locator("td:nth-child(1)")).to_have_text(
        ["Raw points", "Hourly rollups", "Daily rollups"]
    )
    expect(tiers.locator("td:nth-child(2)")).to_have_text(["30 days", "400 days", "for good"])
    raw = tiers.first
    expect(raw).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d – \d{4}-\d\d-\d\d"))
    expect(raw).to_contain_text(re.compile(r"(just now|ago) · nothing dropped"))

    devices = page.get_by_role("table", name="Devices by points").locator("tbody tr")
    expect(devices).to_have_count(2)
    expect(devices.nth(0).get_by_role("cell")).to_have_text([busy, "60"])
    expect(devices.nth(1).get_by_role("cell")).to_have_text([quiet, "6"])
    expect(page.get_by_text(re.compile(r"measured (just now|\d+ \w+ ago)"))).to_be_visible()

    devices.nth(0).get_by_role("link", name=busy).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(busy)


def test_the_archive_card_shows_what_the_archive_holds(page: Page, embedded: Platform) -> None:
    store(embedded, f"silo-{uuid.uuid4().hex[:8]}", 1, ago=3 * 3600)  # a closed hour
    run_job(embedded, "archive")

    username, password = create_user(embedded, "viewer")
    sign_in(page, embedded, username, password)
    expect(page.locator("main h1")).to_be_visible()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Storage").click()
    archive = page.locator("section.card").filter(has=page.get_by_role("heading", name="Archive"))
    expect(archive).to_contain_text(str(embedded.data_dir.parent / "archive"))
    expect(archive).to_contain_text(re.compile(rf"Holds\s*1 hour · 2 points · {SIZE}"))
    expect(archive).to_contain_text(
        re.compile(r"Last run\s*(just now|\d+ \w+ ago) · wrote [12] files?")
    )


def backup_command(platform: Platform, *args: str) -> str:
    """`fieldline backup ...` beside the running `up`, as an operator runs it."""
    ran = subprocess.run(
        [sys.executable, "-m", "fieldline", "backup", *args, "--data-dir", str(platform.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FIELDLINE_LOG_LEVEL": "WARNING"},
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_a_viewer_sees_how_old_the_last_backup_and_verified_restore_are(
    page: Page, embedded: Platform
) -> None:
    username, password = create_user(embedded, "viewer")
    sign_in(page, embedded, username, password)
    page.goto(embedded.api_url + "/#/storage")
    backups = page.locator("section.card").filter(has=page.get_by_role("heading", name="Backups"))
    expect(backups).to_contain_text(f"Location{embedded.data_dir / 'backups'}")
    expect(backups).to_contain_text("Last backupnone yet")
    expect(backups).to_contain_text("Last verified restorenever")

    backup_id = backup_command(embedded, "create").split()[1]
    assert "verified" in backup_command(embedded, "verify")
    page.reload()
    expect(backups).to_contain_text(
        re.compile(rf"Last backup(just now|\d+ \w+ ago) · {SIZE} · {backup_id}")
    )
    expect(backups).to_contain_text(re.compile(r"Last verified restore(just now|\d+ \w+ ago)$"))
