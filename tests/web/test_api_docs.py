"""/docs in headless Chromium: Swagger UI renders the API under the page's strict policy,
loading nothing from any other host (issue 12: it was blank without internet access)."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import ConsoleMessage, Page, Request, expect

from tests.web.conftest import Platform


def test_docs_render_offline_under_the_content_policy(page: Page, platform: Platform) -> None:
    requested: list[str] = []
    refused: list[str] = []
    page.on("request", lambda request: _note(request, requested))
    page.on("console", lambda message: _refusal(message, refused))

    page.goto(f"{platform.api_url}/docs")
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/devices/{device_id}/config"))
    assert operations.count() > 40

    # Open one operation: its error answers and their schema are shown.
    page.locator(".opblock-summary", has_text="/api/v1/devices/{device_id}/config").first.click()
    expect(page.locator(".responses-table").first).to_contain_text("404")

    here = urlsplit(platform.api_url).netloc
    elsewhere = [url for url in requested if urlsplit(url).netloc not in (here, "")]
    assert not elsewhere, elsewhere
    assert not refused, refused


def _note(request: Request, into: list[str]) -> None:
    if not request.url.startswith("data:"):
        into.append(request.url)


def _refusal(message: ConsoleMessage, into: list[str]) -> None:
    # Chromium reports what the Content-Security-Policy blocked on the console.
    if "Content Security Policy" in message.text or "Refused to" in message.text:
        into.append(message.text)
