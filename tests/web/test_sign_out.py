"""Signing out of the dashboard ends the session on the server, not only in the browser."""

from __future__ import annotations

import time

import httpx
from playwright.sync_api import Page

from tests.web.conftest import Platform, create_user, sign_in

DEADLINE_SECONDS = 15.0  # the sign-out request runs in the background of the click


def test_signing_out_ends_the_session_on_the_server(page: Page, platform: Platform) -> None:
    username, password = create_user(platform, "viewer")
    sign_in(page, platform, username, password)
    stored = page.evaluate("JSON.parse(localStorage.getItem('fieldline.session'))")
    bearer = {"Authorization": f"Bearer {stored['access']}"}
    assert httpx.get(f"{platform.api_url}/api/v1/devices", headers=bearer).status_code == 200

    page.get_by_role("button", name="Sign out").click()
    page.locator("#login-form").wait_for()
    assert page.evaluate("localStorage.getItem('fieldline.session')") is None

    refresh = {"refresh_token": stored["refresh"]}
    deadline = time.monotonic() + DEADLINE_SECONDS
    while httpx.post(f"{platform.api_url}/api/v1/auth/refresh", json=refresh).status_code == 200:
        assert time.monotonic() < deadline, "the refresh token still works after signing out"
        time.sleep(0.2)
    assert httpx.get(f"{platform.api_url}/api/v1/devices", headers=bearer).status_code == 401
