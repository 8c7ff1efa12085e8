"""What the `dashboard` scenario runs in the page, and what it counts as rendered.

The two pages measured, each with its render condition and its probe (JavaScript
functions evaluated in the page), the script that times the render from inside the
page, the one that puts the admin's session in place, and the digest of the
dashboard's files that were measured.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import click

from fieldline.bench.queries import LONG_DEVICE

SESSION_KEY = "fieldline.session"  # js/api.js
CHART_RANGE = "30d"
CHART_RANGE_DAYS = 30
OVERVIEW_ROWS = 50  # js/pages/overview.js: the table's default page size


class RenderError(click.ClickException):
    """A page did not render, or rendered something else than what was seeded."""


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
        && document.querySelector('section.stats[aria-label="Fleet at a glance"] .stat')
            !== null""",
    """() => ({
        rows: document.querySelectorAll('table.data[aria-label="Devices"] tbody tr').length,
        range: (document.querySelector(".pager .range") || {}).textContent || "",
        stats: document.querySelectorAll('section.stats[aria-label="Fleet at a glance"] .stat')
            .length,
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
# A group of the fleet's first devices, each with a position: its page draws them on a
# map. The compare view draws the first of them, which have a day of history.
MAP_GROUP = "bench-map"
MAP_DEVICES = 1_000
COMPARE_DEVICES = 50  # js/pages/compare.js draws at most 50
COMPARE_METRIC = "temperature"
GROUP_ROWS = 100  # js/pages/group.js: the devices table's one page
GROUP = DashboardPage(
    "group",
    f"#/groups/{MAP_GROUP}?metric={COMPARE_METRIC}&range=24h",
    """() => document.querySelector('table.data tbody tr') !== null
        && Number((document.querySelector("#group-map") || { dataset: {} }).dataset.devices) > 0
        && Number((document.querySelector("svg.chart") || { getAttribute: () => 0 })
            .getAttribute("data-points")) > 0""",
    """() => ({
        rows: document.querySelectorAll("table.data tbody tr").length,
        markers: Number(document.querySelector("#group-map").dataset.devices),
        renderer: document.querySelector("#group-map").dataset.renderer,
        trend: Number(document.querySelector("svg.chart").getAttribute("data-points")),
    })""",
)
COMPARE = DashboardPage(
    "compare",
    f"#/compare?group={MAP_GROUP}&metric={COMPARE_METRIC}&range=24h",
    """() => {
        const charts = Array.from(document.querySelectorAll("section:not([hidden]) svg.chart"));
        return charts.length === 2
            && charts.every((chart) => Number(chart.getAttribute("data-points")) > 0);
    }""",
    """() => ({
        series: Number(document.querySelector("svg.chart").getAttribute("data-series")),
        points: Number(document.querySelector("svg.chart").getAttribute("data-points")),
        legend: document.querySelectorAll(".chart-legend li").length,
        trend: Number(document.querySelectorAll("section:not([hidden]) svg.chart")[1]
            .getAttribute("data-points")),
    })""",
)
PAGES = (OVERVIEW, DEVICE, GROUP, COMPARE)

# Runs in the page before any of the dashboard's scripts. `dom`: when the page's
# condition first held (in a MutationObserver callback, so right after the change
# that made it hold); `painted`: after the next frame was produced (a message posted
# from requestAnimationFrame runs once that frame's rendering is done).
MEASURE = """
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
SESSION = """
(() => {
  if (location.origin !== %(origin)s) return;
  if (localStorage.getItem(%(key)s) === null) localStorage.setItem(%(key)s, %(value)s);
})();
"""


def dashboard_digest() -> str:
    """What was measured: a digest of the dashboard's files (paths and contents)."""
    static = Path(str(resources.files("fieldline.web") / "static"))
    digest = hashlib.sha256()
    for path in sorted(p for p in static.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(static)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
