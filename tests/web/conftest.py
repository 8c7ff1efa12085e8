"""Headless Chromium for the dashboard's browser tests.

Debian's `chromium` (installed by scripts/test), driven by Playwright's Python
package; Playwright's own browser download is never used. The flags keep
Chromium off the network: it reaches only the servers the tests start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from fieldline.bench.dashboard_browser import CHROMIUM, CHROMIUM_FLAGS
from tests.conftest import PgServer
from tests.e2e.conftest import ADMIN_PASSWORD, Platform, start_platform, stop_platform

__all__ = ["ADMIN_PASSWORD", "Platform", "create_user", "sign_in"]


# Per module, not per session: while Playwright's sync API is open, its event loop counts
# as running in this thread, and the suite's asyncio tests after it could not start theirs.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: scripts/test installs it"
    # Playwright starts it headless with a new empty profile of its own.
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile per test: no tokens or storage carried over."""
    fresh = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield fresh
    finally:
        fresh.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    return opened


@pytest.fixture(scope="session")
def platform(pg15: PgServer) -> Iterator[Platform]:
    """One `fieldline up` for the dashboard's tests, on its own PostgreSQL 15 database.

    Shared by the tests of the session, so each test names what it creates uniquely.
    """
    tmp = Path(tempfile.mkdtemp(prefix="fieldline-web-"))
    database = pg15.create_database()
    running = start_platform("web", {"DATABASE_URL": pg15.url_for(database)}, tmp / "data")
    try:
        yield running
    finally:
        code = stop_platform(running)
        pg15.drop_database(database)
        shutil.rmtree(tmp, ignore_errors=True)
        assert code == 0, f"fieldline up exited {code} on SIGTERM"


@pytest.fixture
def http(platform: Platform) -> Iterator[httpx.Client]:
    """The API as the admin, for preparing and checking data."""
    with httpx.Client(base_url=platform.api_url, headers=platform.headers, timeout=30) as client:
        yield client


PHONE = {"width": 390, "height": 844}


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    """A page in a fresh profile the size of a phone, touch and all."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        opened = context.new_page()
        opened.set_default_timeout(15_000)
        yield opened
    finally:
        context.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the README's screenshots go: FIELDLINE_SCREENSHOTS (e.g. docs/images) keeps
    them; otherwise a temporary directory."""
    chosen = os.environ.get("FIELDLINE_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def create_user(platform: Platform, role: str) -> tuple[str, str]:
    """A new user of `role` through the API; answer (username, password)."""
    username = f"{role}-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    answer = httpx.post(
        f"{platform.api_url}/api/v1/users",
        json={"username": username, "password": password, "role": role},
        headers=platform.headers,
    )
    assert answer.status_code == 201, answer.text
    return username, password


def sign_in(page: Page, platform: Platform, username: str, password: str) -> None:
    """Sign in through the form, as a user would, and wait for the overview."""
    page.goto(platform.api_url + "/")
    form = page.locator("#login-form")
    form.get_by_label("Username").fill(username)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Sign in").click()
    page.locator("nav.nav").wait_for(state="attached")  # behind the menu on a phone
