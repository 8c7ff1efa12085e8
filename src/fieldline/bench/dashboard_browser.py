"""Driving Debian's Chromium for the `dashboard` scenario, one page load at a time.

Playwright launches `/usr/bin/chromium` (never Playwright's own browser download)
with the flags of the dashboard's browser tests. Each load opens a tab, listens to
the DevTools protocol (requests, Performance metrics), adds the in-page timing script
(`dashboard_pages.MEASURE`), waits for the page to answer that it has painted, and
reads what the page measured and shows.

Playwright is imported here at import time, so that `fieldline bench dashboard`
without it is reported as the missing `bench` extra (`bench/cli.py`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    ViewportSize,
    async_playwright,
)

from fieldline.bench.dashboard_api import sign_in
from fieldline.bench.dashboard_load import CASES, Load, Network, load_of
from fieldline.bench.dashboard_pages import (
    MEASURE,
    PAGES,
    SESSION,
    SESSION_KEY,
    DashboardPage,
    RenderError,
)

# Debian's Chromium, off the network, reaching only the servers started beside it; the
# dashboard's browser tests (tests/web/conftest.py) launch it the same way.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
# A pause before each load, so that the previous tab's teardown (and the API's end of
# its streams) does not run during the load.
SETTLE_S = 1.0


async def new_context(browser: Browser, api_url: str) -> BrowserContext:
    """A fresh profile (empty cache and storage) holding a fresh session of the admin."""
    session = await sign_in(api_url)
    context = await browser.new_context(viewport=VIEWPORT, locale="en-US")
    await context.add_init_script(
        script=SESSION
        % {
            "origin": json.dumps(api_url),
            "key": json.dumps(SESSION_KEY),
            "value": json.dumps(json.dumps(session)),
        }
    )
    return context


async def load_page(
    context: BrowserContext,
    api_url: str,
    page: DashboardPage,
    *,
    cache: str,
    repetition: int,
    timeout: float,
) -> Load:
    """Open `page` in a new tab of `context`, wait for its render, measure, close the tab."""
    await asyncio.sleep(SETTLE_S)
    tab = await context.new_page()
    network = Network()
    devtools = await context.new_cdp_session(tab)
    devtools.on("Network.requestWillBeSent", network.sent)
    devtools.on("Network.responseReceived", network.response)
    devtools.on("Network.dataReceived", network.data)
    devtools.on("Network.loadingFinished", network.finished)
    await devtools.send("Network.enable")
    await devtools.send("Performance.enable")
    console_errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console_errors.append(message.text)

    def on_page_error(error: Error) -> None:
        console_errors.append(f"uncaught: {error}")

    tab.on("console", on_console)
    tab.on("pageerror", on_page_error)
    await tab.add_init_script(script=MEASURE % {"rendered": page.rendered})
    try:
        await tab.goto(f"{api_url}/{page.route}", wait_until="commit")
        try:
            # Answered as soon as the page has painted: no polling in the page.
            await asyncio.wait_for(tab.evaluate("() => window.__fieldlineBenchDone"), timeout)
        except TimeoutError as exc:
            text = await tab.evaluate("() => document.body ? document.body.innerText : ''")
            raise RenderError(
                f"the {page.name} page ({page.route}, {cache} load {repetition}) did not render"
                f" within {timeout:g} s. It shows:\n{text[:2000]}\n"
                f"Errors in the page: {console_errors or 'none'}\n"
                f"Requests: {[r['url'] for r in network.requests.values()]}"
            ) from exc
        metrics = await devtools.send("Performance.getMetrics")
        measured: dict[str, Any] = await tab.evaluate("() => window.__fieldlineBench")
        measured["metrics"] = {m["name"]: m["value"] for m in metrics["metrics"]}
        shown: dict[str, Any] = await tab.evaluate(page.probe)
    finally:
        await tab.close()
    return load_of(page, cache, repetition, measured, network, shown, console_errors)


async def measure(api_url: str, *, repetitions: int, timeout: float) -> list[Load]:
    """A warm-up load of each page, then `repetitions` x (fresh context: cold, warm).

    `timeout`: seconds a page may take to render before the run fails.
    """
    loads: list[Load] = []
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            # The API's first requests after its start (imports, prepared statements,
            # PostgreSQL's caches) are not what a user of a running system waits for.
            for page in PAGES:
                context = await new_context(browser, api_url)
                try:
                    loads.append(
                        await load_page(
                            context,
                            api_url,
                            page,
                            cache="first",
                            repetition=0,
                            timeout=timeout,
                        )
                    )
                finally:
                    await context.close()
            for repetition in range(1, repetitions + 1):
                for page in PAGES:
                    context = await new_context(browser, api_url)
                    try:
                        for cache in CASES:
                            loads.append(
                                await load_page(
                                    context,
                                    api_url,
                                    page,
                                    cache=cache,
                                    repetition=repetition,
                                    timeout=timeout,
                                )
                            )
                    finally:
                        await context.close()
        finally:
            await browser.close()
    return loads


async def chromium_version() -> str:
    """What `chromium --version` says, for the run's record of the machine."""
    process = await asyncio.create_subprocess_exec(
        str(CHROMIUM), "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    return out.decode().strip()
