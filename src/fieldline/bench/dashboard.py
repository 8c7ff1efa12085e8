"""Scenario `dashboard`: time to first render of the dashboard in headless Chromium.

The stack of `queries` (PostgreSQL, Mosquitto, `fieldline api` serving the dashboard)
is seeded with `queries.seed`: a registry of 10,000 devices with latest values, one of
which (`bench-long`) has 30 days of history at 10 s for each of its 5 metrics.
Debian's Chromium, driven by Playwright (never Playwright's own browser download),
then opens two pages as the admin, signed in beforehand through the API:

- the overview (`#/`), rendered once the devices table shows its first page of rows
  and the fleet stream has filled the stats cards;
- the chart device's page over 30 days (`#/devices/bench-long?range=30d`), rendered
  once every chart (one per metric) has its points.

The time is measured in the page: a script added before the dashboard's own runs a
MutationObserver that notes `performance.now()` (milliseconds from navigation start)
when the page's condition first holds, then the time of the task after the next
frame (once it is painted). Each repetition opens a fresh browser context, as a user
opening the dashboard for the first time (cold: empty HTTP cache), then the same page
in a new tab of that context (warm: every asset revalidated, answered 304). A load of
each page right after the API started comes first and is not counted.

What a load asked for, and when, comes from the page's Resource Timing entries; the
event streams, which have no entry while they are open, from Chromium's DevTools
protocol, and so does the browser's own work (the renderer's main-thread time, CPU,
script, style and layout: the Performance domain's metrics). Then the same API
requests are timed from Python, one at a time, without the browser: the API's own
share. Every answer is checked against what was seeded (10,000 devices in the pager,
a chart per metric with the points 30 days hold), and the run fails if a page does
not render.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import click
import httpx

from fieldline.bench.deployment import ADMIN_PASSWORD
from fieldline.bench.queries import CHART_METRIC, LONG_DEVICE, METRICS, Scale, Seeded, seed
from fieldline.bench.report import Result, Table, publish
from fieldline.bench.stack import running_stack

if TYPE_CHECKING:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Error,
        ViewportSize,
    )

# As the dashboard's browser tests launch it (tests/web/conftest.py): off the network,
# reaching only the servers the benchmark starts.
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
SESSION_KEY = "fieldline.session"  # js/api.js
CHART_RANGE = "30d"
CHART_RANGE_DAYS = 30
OVERVIEW_ROWS = 50  # js/pages/overview.js: the table's default page size
CASES = ("cold", "warm")
# A pause before each load, so that the previous tab's teardown (and the API's end of
# its streams) does not run during the load.
SETTLE_S = 1.0


@dataclass(frozen=True, slots=True)
class DashboardPage:
    name: str
    route: str
    # A JS function, true once the page has rendered what it is for.
    rendered: str
    # A JS function answering what the page shows, for the checks.
    probe: str


OVERVIEW = DashboardPage(
    "overview",
    "#/",
    """() => document.querySelector('table.data[aria-label="Devices"] tbody tr') !== null
        && document.querySelector("section.stats .stat") !== null""",
    """() => ({
        rows: document.querySelectorAll('table.data[aria-label="Devices"] tbody tr').length,
        range: (document.querySelector(".pager .range") || {}).textContent || "",
        stats: document.querySelectorAll("section.stats .stat").length,
        subtitle: (document.querySelector(".page-head .sub") || {}).textContent || "",
    })""",
)
DEVICE = DashboardPage(
    "device",
    f"#/devices/{LONG_DEVICE}?range={CHART_RANGE}",
    """() => {
        const charts = document.querySelectorAll("section[data-chart] svg.chart");
        return charts.length > 0 && document.querySelector(".tiles .tile") !== null
            && Array.from(charts).every((chart) => Number(chart.getAttribute("data-points")) > 0);
    }""",
    """() => ({
        tiles: Array.from(document.querySelectorAll(".tiles .tile"), (tile) => tile.dataset.metric),
        charts: Array.from(document.querySelectorAll("section[data-chart]"), (section) => {
            const svg = section.querySelector("svg.chart");
            return {
                metric: section.dataset.chart,
                points: Number(svg.getAttribute("data-points")),
                start: Number(svg.getAttribute("data-start")),
                end: Number(svg.getAttribute("data-end")),
            };
        }),
    })""",
)
PAGES = (OVERVIEW, DEVICE)

# Runs in the page before any of the dashboard's scripts. `dom`: when the page's
# condition first held (in a MutationObserver callback, so right after the change
# that made it hold); `painted`: after the next frame was produced (a message posted
# from requestAnimationFrame runs once that frame's rendering is done).
_MEASURE = """
(() => {
  const rendered = %(rendered)s;
  let finish = null;
  window.__fieldlineBenchDone = new Promise((resolve) => {
    finish = resolve;
  });
  const bench = (window.__fieldlineBench = {
    timeOrigin: performance.timeOrigin, dom: null, painted: null, longTasks: [],
    navigation: null, resources: null,
  });
  try {
    new PerformanceObserver((list) => {
      for (const task of list.getEntries()) bench.longTasks.push([task.startTime, task.duration]);
    }).observe({ type: "longtask", buffered: true });
  } catch (error) {
    // no long-task timing in this browser
  }
  const entry = (e) => ({
    name: e.name, type: e.initiatorType, start: e.startTime, requestStart: e.requestStart,
    responseStart: e.responseStart,
    end: e.responseEnd, transfer: e.transferSize, body: e.decodedBodySize,
    status: e.responseStatus,
  });
  const observer = new MutationObserver(() => {
    if (bench.dom !== null || !rendered()) return;
    bench.dom = performance.now();
    observer.disconnect();
    requestAnimationFrame(() => {
      const channel = new MessageChannel();
      channel.port1.onmessage = () => {
        bench.painted = performance.now();
        bench.navigation = entry(performance.getEntriesByType("navigation")[0]);
        bench.resources = performance.getEntriesByType("resource").map(entry);
        finish(true);
      };
      channel.port2.postMessage(null);
    });
  });
  observer.observe(document, {
    childList: true, subtree: true, attributes: true, attributeFilter: ["data-points"],
  });
})();
"""

# The session as js/api.js keeps it, put in place before the dashboard reads it (and
# left alone afterwards, so that a renewed token is kept within the context).
_SESSION = """
(() => {
  if (location.origin !== %(origin)s) return;
  if (localStorage.getItem(%(key)s) === null) localStorage.setItem(%(key)s, %(value)s);
})();
"""


class RenderError(click.ClickException):
    """A page did not render, or rendered something else than what was seeded."""


@dataclass(frozen=True, slots=True)
class Options:
    devices: int = 10_000  # in the registry, the chart device included
    days: int = 30  # the chart device's history
    interval: int = 10  # seconds between its readings
    repetitions: int = 5
    timeout: float = 60.0  # seconds a page may take to render before the run fails
    postgres_bin: Path | None = None

    @property
    def scale(self) -> Scale:
        # The fleet of `queries.Scale` plus its long device: devices - 1 + 1. Only the
        # long device gets history; the overview reads the fleet's latest values.
        return Scale(
            devices=self.devices - 1,
            history_devices=0,
            history_days=self.days,
            history_interval=self.interval,
            long_days=self.days,
            long_interval=self.interval,
        )

    def check(self) -> None:
        if self.devices < 1:
            raise click.BadParameter("--devices must be at least 1 (the chart device)")
        if self.days < 1 or self.interval < 1 or self.repetitions < 1:
            raise click.BadParameter("--days, --interval and --repetitions must be positive")
        if not CHROMIUM.exists():
            raise click.ClickException(f"{CHROMIUM} is missing: install Debian's chromium")


DEFAULT = Options()


@dataclass
class Load:
    """One page load: milliseconds from navigation start, in the page's clock."""

    page: str
    cache: str  # "first" (the warm-up, not counted), "cold" or "warm"
    repetition: int
    dom_ms: float
    painted_ms: float
    html_request_ms: float  # the HTML document asked for (after the tab's own set-up)
    html_ms: float  # the HTML document received
    first_api_ms: float  # the first API request sent (the app's modules ran)
    last_asset_ms: float  # the last stylesheet or module received before render
    last_api_ms: float  # the last API answer received before render
    long_task_ms: float  # main-thread tasks over 50 ms, before the paint
    # Chromium's Performance metrics of the tab, from before navigation to just after
    # the paint: the renderer's main thread (its tasks' wall time, its CPU time, and
    # the script, style and layout in it) and the whole renderer process's CPU time.
    task_ms: float
    main_thread_cpu_ms: float
    script_ms: float
    style_layout_ms: float
    renderer_cpu_ms: float
    asset_requests: int  # the document, stylesheets, modules, icon
    api_requests: int  # completed before render; open event streams are not entries
    asset_bytes: int  # transferred: headers and body; 0 when served from the cache
    api_bytes: int
    shown: dict[str, Any]
    resources: list[dict[str, Any]] = field(default_factory=list)
    # The event stream the page opened (the overview needs its first event to render).
    stream_sent_ms: float | None = None
    stream_first_data_ms: float | None = None
    # The event streams the tab opened until it was measured, from Chromium's DevTools
    # protocol (Resource Timing has an entry only once a request ends), in ms from
    # navigation start: url, sent, first data read by the page.
    streams: list[dict[str, Any]] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


def _rounded(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in entry.items()}


def _is_api(url: str) -> bool:
    return urlsplit(url).path.startswith("/api/")


def _load_of(
    page: DashboardPage,
    cache: str,
    repetition: int,
    measured: dict[str, Any],
    network: Network,
    shown: dict[str, Any],
    console_errors: list[str],
) -> Load:
    painted = float(measured["painted"])
    metrics = measured["metrics"]
    navigation = measured["navigation"]
    resources = [entry for entry in measured["resources"] if entry["end"] <= painted]
    api = [entry for entry in resources if _is_api(entry["name"])]
    assets = [entry for entry in resources if not _is_api(entry["name"])]
    requests = network.relative(float(navigation["requestStart"]))
    streams = [r for r in requests if urlsplit(r["url"]).path.endswith("/stream")]
    stream = streams[0] if streams else {}
    return Load(
        page=page.name,
        cache=cache,
        repetition=repetition,
        dom_ms=round(float(measured["dom"]), 1),
        painted_ms=round(painted, 1),
        html_request_ms=round(float(navigation["requestStart"]), 1),
        html_ms=round(float(navigation["end"]), 1),
        first_api_ms=round(min((e["start"] for e in api), default=float("nan")), 1),
        last_asset_ms=round(max((e["end"] for e in assets), default=navigation["end"]), 1),
        last_api_ms=round(max((e["end"] for e in api), default=float("nan")), 1),
        long_task_ms=round(sum(d for start, d in measured["longTasks"] if start < painted), 1),
        task_ms=round(1000 * metrics["TaskDuration"], 1),
        main_thread_cpu_ms=round(1000 * metrics["ThreadTime"], 1),
        script_ms=round(1000 * metrics["ScriptDuration"], 1),
        style_layout_ms=round(
            1000 * (metrics["RecalcStyleDuration"] + metrics["LayoutDuration"]), 1
        ),
        renderer_cpu_ms=round(1000 * metrics["ProcessTime"], 1),
        asset_requests=1 + len(assets),
        api_requests=len(api),
        asset_bytes=int(navigation["transfer"]) + sum(int(e["transfer"]) for e in assets),
        api_bytes=sum(int(e["transfer"]) for e in api),
        shown=shown,
        resources=[_rounded(entry) for entry in [navigation, *measured["resources"]]],
        stream_sent_ms=stream.get("sent"),
        stream_first_data_ms=stream.get("first_data"),
        streams=streams,
        console_errors=console_errors,
    )


class Network:
    """A tab's requests as Chromium's DevTools protocol reports them (its monotonic clock)."""

    def __init__(self) -> None:
        self.requests: dict[str, dict[str, Any]] = {}
        self.document_timing: dict[str, Any] | None = None

    def sent(self, event: dict[str, Any]) -> None:
        self.requests.setdefault(
            event["requestId"], {"url": event["request"]["url"], "sent": event["timestamp"]}
        )

    def response(self, event: dict[str, Any]) -> None:
        if event["type"] == "Document" and self.document_timing is None:
            self.document_timing = event["response"].get("timing")

    def data(self, event: dict[str, Any]) -> None:
        request = self.requests.get(event["requestId"])
        if request is not None:
            request.setdefault("first_data", event["timestamp"])

    def finished(self, event: dict[str, Any]) -> None:
        request = self.requests.get(event["requestId"])
        if request is not None:
            request["finished"] = event["timestamp"]

    def relative(self, document_request_start: float) -> list[dict[str, Any]]:
        """The requests in ms from navigation start: the document's request was sent at
        `document_request_start` in the page's clock and at requestTime + sendStart in
        the protocol's."""
        if self.document_timing is None:
            return []
        timing = self.document_timing
        origin = 1000 * timing["requestTime"] + timing["sendStart"] - document_request_start
        return [
            {"url": request["url"]}
            | {
                key: round(1000 * request[key] - origin, 1)
                for key in ("sent", "first_data", "finished")
                if key in request
            }
            for request in self.requests.values()
        ]


# --- the browser ---------------------------------------------------------------------


async def sign_in(api_url: str) -> dict[str, Any]:
    """The admin's session, as the sign-in form would store it in localStorage."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        tokens = (
            (
                await http.post(
                    "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
                )
            )
            .raise_for_status()
            .json()
        )
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        me = (await http.get("/api/v1/auth/me", headers=headers)).raise_for_status().json()
    return {"access": tokens["access_token"], "refresh": tokens["refresh_token"], "user": me}


async def new_context(browser: Browser, api_url: str) -> BrowserContext:
    """A fresh profile (empty cache and storage) holding a fresh session of the admin."""
    session = await sign_in(api_url)
    context = await browser.new_context(viewport=VIEWPORT, locale="en-US")
    await context.add_init_script(
        script=_SESSION
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
    await tab.add_init_script(script=_MEASURE % {"rendered": page.rendered})
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
    return _load_of(page, cache, repetition, measured, network, shown, console_errors)


async def measure(api_url: str, options: Options) -> list[Load]:
    """A warm-up load of each page, then `repetitions` x (fresh context: cold, warm)."""
    from playwright.async_api import async_playwright

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
                            timeout=options.timeout,
                        )
                    )
                finally:
                    await context.close()
            for repetition in range(1, options.repetitions + 1):
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
                                    timeout=options.timeout,
                                )
                            )
                    finally:
                        await context.close()
        finally:
            await browser.close()
    return loads


# --- the same requests without a browser ---------------------------------------------

# What js/pages/device.js asks for over 30 days: the smallest bucket giving at most
# 300 points. The checks compare it with what the page asked for.
CHART_BUCKET = "3h"


def server_requests(end: datetime) -> dict[str, str]:
    last = end.isoformat()
    first = (end - timedelta(days=CHART_RANGE_DAYS)).isoformat()
    device = f"/api/v1/devices/{LONG_DEVICE}"
    return {
        "GET /auth/me": "/api/v1/auth/me",
        "GET /fleet/devices (first page of 50)": (
            "/api/v1/fleet/devices?sort=device_id&order=asc&offset=0&limit=50"
        ),
        "GET /fleet/summary (what the stream sends)": "/api/v1/fleet/summary",
        "GET /fleet/stream, to its first event": "/api/v1/fleet/stream",
        "GET /devices/{id}": device,
        "GET /devices/{id}/telemetry/latest": f"{device}/telemetry/latest",
        f"GET /devices/{{id}}/telemetry, {CHART_RANGE} of one metric, {CHART_BUCKET} buckets": (
            f"{device}/telemetry?metric={CHART_METRIC}&bucket={CHART_BUCKET}&agg=avg&"
            + urlencode({"start": first, "end": last})
        ),
    }


async def server_times(api_url: str, end: datetime, repetitions: int) -> dict[str, list[float]]:
    """Each request the pages make on their critical path, from Python, one at a time.

    The API's own share of a page's time, with no browser competing for the cores.
    """
    session = await sign_in(api_url)
    headers = {"Authorization": f"Bearer {session['access']}"}
    times: dict[str, list[float]] = {}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as http:
        for name, path in server_requests(end).items():
            times[name] = []
            for repetition in range(repetitions + 1):  # the first one warms up
                started = time.perf_counter()
                if path.endswith("/stream"):
                    async with http.stream("GET", path) as answer:
                        answer.raise_for_status()
                        async for line in answer.aiter_lines():
                            if line.startswith("data:"):
                                break
                else:
                    (await http.get(path)).raise_for_status()
                if repetition:
                    times[name].append(round(1000 * (time.perf_counter() - started), 1))
    return times


# --- checks --------------------------------------------------------------------------


def _seconds(width: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    return int(width[:-1]) * units[width[-1]]


def check_loads(loads: list[Load], options: Options) -> list[str]:
    """What each load showed, against what was seeded; raises on any difference."""
    problems: list[str] = []
    names = sorted(name for name, _, _ in METRICS)
    buckets: set[str] = set()
    points: list[int] = []
    rows: set[int] = set()
    ranges: set[str] = set()
    for load in loads:
        where = f"{load.page} {load.cache} load {load.repetition}"
        if load.page == OVERVIEW.name:
            rows.add(load.shown["rows"])
            ranges.add(load.shown["range"])
            if load.shown["rows"] != min(OVERVIEW_ROWS, options.devices):
                problems.append(f"{where}: {load.shown['rows']} rows in the devices table")
            if not load.shown["range"].endswith(f"of {options.devices:,}"):
                problems.append(f"{where}: the pager says {load.shown['range']!r}")
            if not load.shown["subtitle"].startswith(f"{options.devices:,} devices"):
                problems.append(f"{where}: the subtitle says {load.shown['subtitle']!r}")
            continue
        charts = load.shown["charts"]
        if sorted(chart["metric"] for chart in charts) != names:
            problems.append(f"{where}: charts of {[c['metric'] for c in charts]}, not {names}")
        if sorted(load.shown["tiles"]) != names:
            problems.append(f"{where}: tiles of {load.shown['tiles']}, not {names}")
        asked = {
            parse_qs(urlsplit(url).query).get("bucket", [""])[0]
            for url in (entry["name"] for entry in load.resources)
            if urlsplit(url).path.endswith("/telemetry")
        }
        buckets |= asked
        if len(asked) != 1 or "" in asked:
            problems.append(f"{where}: charts asked for buckets {sorted(asked)}")
            continue
        width = _seconds(next(iter(asked)))
        covered = min(options.days, CHART_RANGE_DAYS) * 86_400
        expected = covered / width
        for chart in charts:
            points.append(chart["points"])
            if not 0.95 * expected - 1 <= chart["points"] <= expected + 2:
                problems.append(
                    f"{where}: {chart['metric']} chart has {chart['points']} points,"
                    f" expected about {expected:.0f} ({covered // 86_400} d of {width} s buckets)"
                )
    if problems:
        raise RenderError(
            "the dashboard showed something else than was seeded:\n" + "\n".join(problems)
        )
    errors = sorted({error for load in loads for error in load.console_errors})
    notes = [
        f"Checked on every load: the overview's table showed {sorted(rows)} rows and its"
        f" pager {sorted(ranges)}; the device page showed {len(names)} tiles and"
        f" {len(names)} charts ({', '.join(names)}) of {min(points)}–{max(points)} points"
        f" ({', '.join(sorted(buckets))} buckets over {CHART_RANGE}).",
    ]
    if buckets != {CHART_BUCKET}:
        notes.append(
            f"The charts asked for {sorted(buckets)} buckets; the server-side table's chart"
            f" request uses {CHART_BUCKET}."
        )
    if errors:
        notes.append(f"Errors the pages logged: {errors}.")
    return notes


# --- the scenario --------------------------------------------------------------------


async def run(directory: Path, options: Options) -> Result:
    options.check()
    scale = options.scale
    scale.check()
    result = Result(
        "dashboard",
        {
            "devices": options.devices,
            "chart_device": LONG_DEVICE,
            "days": options.days,
            "interval_s": options.interval,
            "repetitions": options.repetitions,
            "chart_range": CHART_RANGE,
            "viewport": VIEWPORT,
            "chromium_flags": CHROMIUM_FLAGS,
            "dashboard_sha256": dashboard_digest(),
        },
    )
    async with running_stack(directory, postgres_bin=options.postgres_bin) as stack:
        seeded = await seed(stack.database_url, scale, now=datetime.now(UTC))
        browser_version = await _chromium_version()
        load_before = os.getloadavg()
        loads = await measure(stack.deployment.api_url, options)
        load_after = os.getloadavg()
        server = await server_times(stack.deployment.api_url, seeded.end, options.repetitions)
    result.machine["chromium"] = browser_version
    checks = check_loads(loads, options)
    result.tables.append(_seed_table(options, seeded))
    result.tables.append(_render_table(loads))
    result.tables.append(_phases_table(loads))
    result.tables.append(_browser_table(loads))
    result.tables.append(_api_table(loads))
    result.tables.append(_server_table(server))
    result.data = {
        "seeded": {**asdict(seeded), "end": seeded.end.isoformat()},
        "loads": [asdict(load) for load in loads],
        "server_ms": server,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    result.notes += [*checks, *_notes(loads)]
    result.notes.append(
        f"Load average (1, 5, 15 min) when the browser started: {_loads(load_before)};"
        f" when it ended: {_loads(load_after)}, on {os.cpu_count()} cores. Anything else"
        " running on the machine shows here, and in the times."
    )
    return result


def dashboard_digest() -> str:
    """What was measured: a digest of the dashboard's files (paths and contents)."""
    static = Path(str(resources.files("fieldline.web") / "static"))
    digest = hashlib.sha256()
    for path in sorted(p for p in static.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(static)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


async def _chromium_version() -> str:
    process = await asyncio.create_subprocess_exec(
        str(CHROMIUM), "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    return out.decode().strip()


def _loads(average: tuple[float, float, float]) -> str:
    return ", ".join(f"{value:.2f}" for value in average)


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def _counted(loads: list[Load], page: str, cache: str) -> list[Load]:
    return [load for load in loads if load.page == page and load.cache == cache]


def _label(page: str) -> str:
    if page == OVERVIEW.name:
        return "overview"
    return f"device page, {CHART_RANGE} charts"


def _seed_table(options: Options, seeded: Seeded) -> Table:
    table = Table("Seeded", ["what", "value"])
    table.rows += [
        ["devices in the registry, with latest values", options.devices],
        [
            f"history of the chart device ({LONG_DEVICE}, {len(METRICS)} metrics)",
            f"{options.days} d @ {options.interval} s",
        ],
        ["points stored", seeded.points],
        ["seeding s", round(seeded.insert_seconds + seeded.vacuum_seconds, 1)],
    ]
    return table


def _render_table(loads: list[Load]) -> Table:
    table = Table(
        "Time to first render: ms from navigation start to the frame after render,"
        " measured in the page",
        [
            "page",
            "browser cache",
            "loads",
            "median ms",
            "min ms",
            "max ms",
            "DOM complete, median ms",
            "requests before render: assets + API",
            "KiB transferred: assets + API",
        ],
    )
    for page in PAGES:
        for cache in CASES:
            chosen = _counted(loads, page.name, cache)
            painted = [load.painted_ms for load in chosen]
            table.rows.append(
                [
                    _label(page.name),
                    cache,
                    len(chosen),
                    _median(painted),
                    min(painted),
                    max(painted),
                    _median([load.dom_ms for load in chosen]),
                    f"{_span([load.asset_requests for load in chosen])}"
                    f" + {_span([load.api_requests for load in chosen])}",
                    f"{_kib([load.asset_bytes for load in chosen])}"
                    f" + {_kib([load.api_bytes for load in chosen])}",
                ]
            )
    return table


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}–{high}"


def _kib(values: list[int]) -> str:
    return f"{statistics.median(values) / 1024:.1f}"


def _phases_table(loads: list[Load]) -> Table:
    table = Table(
        "Where the time goes: medians, ms from navigation start",
        [
            "page",
            "browser cache",
            "HTML asked for",
            "HTML received",
            "first API request sent",
            "last asset received",
            "last API answer",
            "event stream sent",
            "its first event read",
            "rendered (DOM)",
            "painted",
        ],
    )
    for page in PAGES:
        for cache in CASES:
            chosen = _counted(loads, page.name, cache)
            table.rows.append(
                [
                    _label(page.name),
                    cache,
                    _median([load.html_request_ms for load in chosen]),
                    _median([load.html_ms for load in chosen]),
                    _median([load.first_api_ms for load in chosen]),
                    _median([load.last_asset_ms for load in chosen]),
                    _median([load.last_api_ms for load in chosen]),
                    _before_render(chosen, "stream_sent_ms"),
                    _before_render(chosen, "stream_first_data_ms"),
                    _median([load.dom_ms for load in chosen]),
                    _median([load.painted_ms for load in chosen]),
                ]
            )
    return table


def _browser_table(loads: list[Load]) -> Table:
    table = Table(
        "The browser's own work until the paint: medians, ms (Chromium's Performance metrics)",
        [
            "page",
            "browser cache",
            "painted",
            "main-thread tasks (wall)",
            "main-thread CPU",
            "script",
            "style + layout",
            "long tasks (> 50 ms)",
            "renderer process CPU",
        ],
    )
    for page in PAGES:
        for cache in CASES:
            chosen = _counted(loads, page.name, cache)
            table.rows.append(
                [
                    _label(page.name),
                    cache,
                    _median([load.painted_ms for load in chosen]),
                    _median([load.task_ms for load in chosen]),
                    _median([load.main_thread_cpu_ms for load in chosen]),
                    _median([load.script_ms for load in chosen]),
                    _median([load.style_layout_ms for load in chosen]),
                    _median([load.long_task_ms for load in chosen]),
                    _median([load.renderer_cpu_ms for load in chosen]),
                ]
            )
    return table


def _before_render(loads: list[Load], attribute: str) -> float | str:
    """The median of a time, or "-" when it fell after the render in any of the loads."""
    values = [getattr(load, attribute) for load in loads]
    if any(value is None or value > load.dom_ms for value, load in zip(values, loads, strict=True)):
        return "-"
    return _median(values)


def _api_table(loads: list[Load]) -> Table:
    """The API requests of each page's median cold load, in the order they were sent."""
    table = Table(
        "API requests of the median cold load (ms from navigation start)",
        ["page", "request", "sent", "first byte", "received", "KiB"],
    )
    for page in PAGES:
        chosen = sorted(_counted(loads, page.name, "cold"), key=lambda load: load.painted_ms)
        median = chosen[len(chosen) // 2]
        entries = [
            e for e in median.resources[1:] if _is_api(e["name"]) and e["end"] <= median.painted_ms
        ]
        for entry in sorted(entries, key=lambda e: e["start"]):
            parts = urlsplit(entry["name"])
            query = parse_qs(parts.query)
            shown = parts.path.removeprefix("/api/v1")
            if "metric" in query:
                shown += f"?metric={query['metric'][0]}&bucket={query.get('bucket', ['-'])[0]}"
            table.rows.append(
                [
                    _label(page.name),
                    shown,
                    round(entry["start"], 1),
                    round(entry["responseStart"], 1),
                    round(entry["end"], 1),
                    round(entry["body"] / 1024, 1),
                ]
            )
    return table


def _server_table(server: dict[str, list[float]]) -> Table:
    table = Table(
        "The same API requests from Python, one at a time, no browser running",
        ["request", "median ms", "min ms", "max ms"],
    )
    for name, times in server.items():
        table.rows.append([name, _median(times), min(times), max(times)])
    return table


def _notes(loads: list[Load]) -> list[str]:
    first = {load.page: load.painted_ms for load in loads if load.cache == "first"}
    return [
        "Cold: a fresh browser context (empty HTTP cache and storage) per repetition."
        " Warm: the same page again in a new tab of that context; the assets are"
        " revalidated (fieldline serves them with `Cache-Control: no-cache` and an ETag)"
        " and answered 304. Each context is signed in through the API beforehand; the"
        " session is put in localStorage before the page's scripts run.",
        "Time is `performance.now()` in the page: from navigation start to the"
        " MutationObserver callback in which the render condition first held (DOM"
        " complete), then to the task after the next frame (painted). The overview is"
        " rendered when the devices table has rows and the fleet stream has filled the"
        " stats cards; the device page when every chart has points.",
        "Requests and bytes are the page's Resource Timing entries completed before the"
        " paint (transferred = headers and body). The overview also needs the first event"
        " of its fleet stream (`/api/v1/fleet/stream`), an open request that is not an"
        " entry; the device page opens its stream after its charts are drawn.",
        f"Not counted: one load of each page right after the API started: overview"
        f" {first.get(OVERVIEW.name)} ms, device page {first.get(DEVICE.name)} ms.",
        "The browser's work: Chromium's Performance metrics of the tab (DevTools protocol),"
        " read just after the paint. Main-thread tasks is the wall time of the renderer's"
        " main-thread tasks, main-thread CPU the CPU time that thread got; script and style"
        " + layout are parts of those tasks; renderer process CPU counts all its threads"
        " (10 ms resolution).",
        f"Loads are {SETTLE_S:g} s apart, one at a time. Chromium, PostgreSQL and"
        " fieldline api share the machine's cores.",
        f"Dashboard measured: files digest {dashboard_digest()} (sha256 of"
        " `fieldline/web/static`, paths and contents).",
    ]


@click.command("dashboard")
@click.option(
    "--devices",
    default=DEFAULT.devices,
    show_default=True,
    help="Devices in the registry (with latest values), the chart device included.",
)
@click.option(
    "--days", default=DEFAULT.days, show_default=True, help="History of the chart device."
)
@click.option(
    "--interval",
    default=DEFAULT.interval,
    show_default=True,
    help="Seconds between the chart device's readings.",
)
@click.option(
    "--repetitions",
    default=DEFAULT.repetitions,
    show_default=True,
    help="Fresh browser contexts per page (each a cold then a warm load).",
)
@click.option(
    "--timeout",
    default=DEFAULT.timeout,
    show_default=True,
    help="Seconds a page may take to render before the run fails.",
)
@click.option("--postgres-bin", type=click.Path(path_type=Path), help="initdb/pg_ctl directory.")
@click.option("--keep-dir", is_flag=True, help="Keep the stack's directory (logs, database).")
def command(
    devices: int,
    days: int,
    interval: int,
    repetitions: int,
    timeout: float,
    postgres_bin: Path | None,
    keep_dir: bool,
) -> None:
    """Time to first render of the dashboard in headless Chromium."""
    options = Options(devices, days, interval, repetitions, timeout, postgres_bin)
    directory = Path(tempfile.mkdtemp(prefix="fieldline-bench-"))
    try:
        result = asyncio.run(run(directory, options))
    finally:
        if keep_dir:
            click.echo(f"stack directory kept: {directory}", err=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    publish(result)
