"""The `dashboard` scenario's tables and notes, from its loads and the API's own times.

Medians over the counted loads of each page and browser cache: time to first render,
where the time goes, the browser's own work, the API requests of the median cold
load, and the same requests timed from Python without the browser.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from fieldline.bench.dashboard_browser import SETTLE_S
from fieldline.bench.dashboard_load import CASES, Load, is_api
from fieldline.bench.dashboard_pages import (
    CHART_RANGE,
    COMPARE,
    COMPARE_DEVICES,
    DEVICE,
    GROUP,
    MAP_DEVICES,
    OVERVIEW,
    PAGES,
    dashboard_digest,
)
from fieldline.bench.report import Table


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def _counted(loads: list[Load], page: str, cache: str) -> list[Load]:
    return [load for load in loads if load.page == page and load.cache == cache]


Cell = Callable[[list[Load]], float | str]


def _median_of(attribute: str) -> Cell:
    return lambda chosen: _median([getattr(load, attribute) for load in chosen])


def _add_rows(table: Table, loads: list[Load], *cells: Cell) -> None:
    """A row per page and browser cache: its label, then each cell over its loads."""
    for page in PAGES:
        for cache in CASES:
            chosen = _counted(loads, page.name, cache)
            table.rows.append([_label(page.name), cache, *(cell(chosen) for cell in cells)])


def _label(page: str) -> str:
    labels = {
        OVERVIEW.name: "overview",
        DEVICE.name: f"device page, {CHART_RANGE} charts",
        GROUP.name: f"group page, map of {MAP_DEVICES:,} devices",
        COMPARE.name: f"compare view, {COMPARE_DEVICES} devices x 24 h",
    }
    return labels[page]


def render_table(loads: list[Load]) -> Table:
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
    _add_rows(
        table,
        loads,
        len,
        _median_of("painted_ms"),
        lambda chosen: min(load.painted_ms for load in chosen),
        lambda chosen: max(load.painted_ms for load in chosen),
        _median_of("dom_ms"),
        lambda chosen: (
            f"{_span([load.asset_requests for load in chosen])}"
            f" + {_span([load.api_requests for load in chosen])}"
        ),
        lambda chosen: (
            f"{_kib([load.asset_bytes for load in chosen])}"
            f" + {_kib([load.api_bytes for load in chosen])}"
        ),
    )
    return table


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}–{high}"


def _kib(values: list[int]) -> str:
    return f"{statistics.median(values) / 1024:.1f}"


def phases_table(loads: list[Load]) -> Table:
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
    _add_rows(
        table,
        loads,
        _median_of("html_request_ms"),
        _median_of("html_ms"),
        _median_of("first_api_ms"),
        _median_of("last_asset_ms"),
        _median_of("last_api_ms"),
        lambda chosen: _before_render(chosen, "stream_sent_ms"),
        lambda chosen: _before_render(chosen, "stream_first_data_ms"),
        _median_of("dom_ms"),
        _median_of("painted_ms"),
    )
    return table


def browser_table(loads: list[Load]) -> Table:
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
    _add_rows(
        table,
        loads,
        *(
            _median_of(attribute)
            for attribute in (
                "painted_ms",
                "task_ms",
                "main_thread_cpu_ms",
                "script_ms",
                "style_layout_ms",
                "long_task_ms",
                "renderer_cpu_ms",
            )
        ),
    )
    return table


def _before_render(loads: list[Load], attribute: str) -> float | str:
    """The median of a time, or "-" when it fell after the render in any of the loads."""
    values = [getattr(load, attribute) for load in loads]
    if any(value is None or value > load.dom_ms for value, load in zip(values, loads, strict=True)):
        return "-"
    return _median(values)


def api_table(loads: list[Load]) -> Table:
    """The API requests of each page's median cold load, in the order they were sent."""
    table = Table(
        "API requests of the median cold load (ms from navigation start)",
        ["page", "request", "sent", "first byte", "received", "KiB"],
    )
    for page in PAGES:
        chosen = sorted(_counted(loads, page.name, "cold"), key=lambda load: load.painted_ms)
        median = chosen[len(chosen) // 2]
        entries = [
            e for e in median.resources[1:] if is_api(e["name"]) and e["end"] <= median.painted_ms
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


def server_table(server: dict[str, list[float]]) -> Table:
    table = Table(
        "The same API requests from Python, one at a time, no browser running",
        ["request", "median ms", "min ms", "max ms"],
    )
    for name, times in server.items():
        table.rows.append([name, _median(times), min(times), max(times)])
    return table


def notes(loads: list[Load]) -> list[str]:
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
        " stats cards; the device page when every chart has points; the group page"
        " when its table has rows, its trend points and its map every device's marker;"
        " the compare view when its chart of the devices and the group's trend have"
        " points.",
        "Requests and bytes are the page's Resource Timing entries completed before the"
        " paint (transferred = headers and body). The overview also needs the first event"
        " of its fleet stream (`/api/v1/fleet/stream`), an open request that is not an"
        " entry; the device page opens its stream after its charts are drawn.",
        "Not counted: one load of each page right after the API started: "
        + ", ".join(f"{_label(page.name)} {first.get(page.name)} ms" for page in PAGES)
        + ".",
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
