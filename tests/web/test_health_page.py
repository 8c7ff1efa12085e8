"""The dashboard's Health page in headless Chromium: an admin sees fieldline's own
processes alive, the worker's jobs, the database, and a health check that really fails
(with its system alert once it has failed long enough); a viewer is not offered it.

The page shows the whole instance and a failing check raises a system alert, so this
module runs a `fieldline up` of its own rather than the shared one, with a 2 s heartbeat
so that the page and the worker's `health` job follow quickly.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Page, Request, expect

from tests.conftest import PgServer
from tests.e2e.conftest import start_platform, stop_platform
from tests.web.conftest import ADMIN_PASSWORD, Platform, create_user, sign_in

HEARTBEAT_SECONDS = 2


@dataclass(frozen=True, slots=True)
class Instance:
    platform: Platform
    database_url: str

    def sql(self, statement: str) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(statement)


@pytest.fixture(scope="module")
def instance(pg15: PgServer) -> Iterator[Instance]:
    tmp = Path(tempfile.mkdtemp(prefix="fieldline-web-health-"))
    database = pg15.create_database()
    env = {
        "DATABASE_URL": pg15.url_for(database),
        "FIELDLINE_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
    }
    running = start_platform("web-health", env, tmp / "data")
    try:
        yield Instance(running, pg15.url_for(database))
    finally:
        code = stop_platform(running)
        pg15.drop_database(database)
        shutil.rmtree(tmp, ignore_errors=True)
        assert code == 0, f"fieldline up exited {code} on SIGTERM"


def test_an_admin_sees_the_processes_the_jobs_and_a_failing_check(
    page: Page, phone: Page, instance: Instance
) -> None:
    platform = instance.platform
    sign_in(page, platform, "admin", ADMIN_PASSWORD)
    expect(page.locator("main h1")).to_be_visible()
    menu = page.get_by_role("button", name="Menu")  # an admin's many pages: behind it
    if menu.is_visible():
        menu.click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Health").click()
    expect(page.get_by_role("heading", name="Health", level=1)).to_be_visible()

    up = page.get_by_role("table", name="Processes").locator('tbody tr[data-process="up"]')
    expect(up).to_contain_text("alive")
    expect(up).to_contain_text(re.compile(r"up: api, .*worker"))
    expect(up).to_contain_text(re.compile(r"(just now|\d+ s ago)"))
    jobs = page.get_by_role("table", name="Worker jobs")
    expect(jobs.locator('tr[data-job="health"]')).to_contain_text("done")
    # The backup job has had its first look (nothing due on a new instance): from now on
    # it looks again only in an hour, and cannot take the backup the check below misses.
    expect(jobs.locator('tr[data-job="backup"]')).to_contain_text("done")
    database = page.locator("section.card").filter(has=page.get_by_role("heading", name="Database"))
    expect(database).to_contain_text(re.compile(r"VersionPostgreSQL \d+"))
    expect(database).to_contain_text(re.compile(r"Connections\d+ of \d+"))
    expect(database).to_contain_text("Last telemetrynone received yet")

    # An instance three days old without a backup: the worker's health check fails, and
    # the page, asking every heartbeat, shows it without a reload.
    instance.sql("UPDATE schema_migrations SET applied_at = applied_at - interval '3 days'")
    summary = page.get_by_role("region", name="Summary")
    check = summary.locator('li[data-check="backup_too_old"]')
    expect(summary).to_contain_text("1 check failing")
    expect(check).to_contain_text("warning")
    expect(check).to_contain_text("There is no backup yet")
    expect(check).to_contain_text("no alert yet")
    backups = page.locator("section.card").filter(has=page.get_by_role("heading", name="Backups"))
    expect(backups.locator(".badge")).to_have_text("none yet")

    # Failing for two hours: past its hour, the check opens its system alert.
    instance.sql(
        "UPDATE health_checks SET failing_since = failing_since - interval '2 hours'"
        " WHERE key = 'backup_too_old'"
    )
    link = check.get_by_role("link", name=re.compile(r"Alert #\d+"))
    expect(link).to_be_visible()
    alert_id = link.inner_text().removeprefix("Alert #")
    expect(check).to_contain_text(re.compile(r"failing for 2 h \d+ min"))

    asked: list[Request] = []
    page.on("request", lambda r: asked.append(r) if "/api/v1/system" in r.url else None)
    link.click()
    alert = page.locator(f'tr[data-alert-id="{alert_id}"]')
    expect(alert).to_contain_text("There is no backup yet")
    expect(alert.get_by_role("link", name="There is no backup yet")).to_have_attribute(
        "href", "#/health"
    )
    left = time.monotonic()

    # The same on a phone: behind the menu, nothing wider than the screen.
    sign_in(phone, platform, "admin", ADMIN_PASSWORD)
    expect(phone.locator("main h1")).to_be_visible()
    phone.get_by_role("button", name="Menu").click()
    phone.get_by_role("navigation", name="Main").get_by_role("link", name="Health").click()
    expect(phone.get_by_role("region", name="Summary")).to_contain_text("There is no backup yet")
    expect(phone.locator('tr[data-job="health"]')).to_contain_text("done")
    expect(phone.locator('tr[data-process="up"]')).to_contain_text("alive")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390

    # Meanwhile, more than a heartbeat after the desktop's page left the health page:
    page.wait_for_timeout(max(0, left + HEARTBEAT_SECONDS + 0.5 - time.monotonic()) * 1000)
    assert asked == [], "the health page still polls after it was left"


def test_a_viewer_is_not_offered_the_health_page(page: Page, instance: Instance) -> None:
    platform = instance.platform
    username, password = create_user(platform, "viewer")
    sign_in(page, platform, username, password)
    expect(page.locator("main h1")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Storage")).to_be_visible()
    expect(nav.get_by_role("link", name="Health")).to_have_count(0)

    page.goto(f"{platform.api_url}/#/health")
    expect(page.locator("main")).to_contain_text("Not available")
    expect(page.locator("main")).to_contain_text("This page needs the admin role.")
