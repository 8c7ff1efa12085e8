"""The dashboard's time-series chart (static/js/chart.js), driven in headless Chromium.

A small harness page loads the module the way the dashboard does (an ES module
and its stylesheet, served over HTTP) and exposes `makeChart` to the tests.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import FloatRect, Page, expect

STATIC = Path(__file__).resolve().parents[2] / "src" / "fieldline" / "web" / "static"

HARNESS = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>chart harness</title>
<link rel="stylesheet" href="/css/chart.css">
<style>
  body { margin: 24px; font-family: system-ui, sans-serif; color: #1f2937; background: #f8fafc; }
  .card { max-width: 820px; padding: 16px; background: #fff; border-radius: 10px;
          border: 1px solid #e5e7eb; }
  h2 { margin: 0 0 8px; font-size: 14px; font-weight: 600; }
</style>
</head>
<body>
<div class="card"><h2>temperature</h2><div id="chart"></div></div>
<div class="card"><h2>compared</h2><div id="one"></div><div id="two"></div></div>
<script type="module">
  import { createChart, createSync } from "/js/chart.js";
  // Two charts on one crosshair: the first with several series, the second with states.
  window.makeLinked = (list, states, start, end, bucketMs) => {
    const sync = createSync();
    const one = createChart(document.getElementById("one"), { label: "compared", sync });
    const two = createChart(document.getElementById("two"), { label: "relay", height: 80, sync });
    one.setSeries(list, { start, end, bucketMs });
    two.setSeries([{ label: "relay", points: states.points }], { start, end, bucketMs, states });
  };
  window.zooms = [];
  let chart = null;
  window.makeChart = (points, start, end, bucketMs) => {
    chart?.destroy();
    chart = createChart(document.getElementById("chart"), {
      label: "temperature",
      onZoom: (s, e) => window.zooms.push([s, e]),
    });
    chart.setData(points, { start, end, bucketMs });
  };
</script>
</body>
</html>
"""

T0 = 1_732_500_000_000  # an arbitrary epoch-ms start
MINUTE = 60_000
Point = dict[str, float]


class _Handler(SimpleHTTPRequestHandler):
    """The static directory, plus the harness page at /chart-harness.html."""

    def do_GET(self) -> None:
        if self.path != "/chart-harness.html":
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(HARNESS)))
        self.end_headers()
        self.wfile.write(HARNESS)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest's output clean


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(STATIC)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def harness(page: Page, server: str) -> Iterator[Page]:
    """The harness page; fails the test if the page raised any script error."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server}/chart-harness.html")
    yield page
    assert errors == []


def series(n: int, step_ms: int = MINUTE, start: int = T0) -> list[Point]:
    return [{"t": start + i * step_ms, "v": round(20 + 5 * math.sin(i / 8), 2)} for i in range(n)]


def draw(page: Page, points: list[Point], start: int, end: int, bucket_ms: int = MINUTE) -> None:
    page.evaluate("([p, s, e, b]) => makeChart(p, s, e, b)", [points, start, end, bucket_ms])


def plot_box(page: Page) -> FloatRect:
    box = page.locator(".chart-overlay").bounding_box()
    assert box is not None
    return box


def test_points_render_with_round_ticks(harness: Page) -> None:
    points = series(100)
    draw(harness, points, T0, T0 + 100 * MINUTE)
    svg = harness.locator("svg.chart")
    expect(svg).to_have_attribute("data-points", "100")
    expect(svg).to_have_attribute("aria-label", "temperature chart")
    assert len(harness.locator("path.chart-line").get_attribute("d") or "") > 100

    labels = [float(s) for s in harness.locator(".chart-axis-y text").all_text_contents()]
    assert len(labels) >= 3
    step = round(labels[1] - labels[0], 9)
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in {1, 2, 5}
    assert all(math.isclose(b - a, step) for a, b in itertools.pairwise(labels))
    assert all(math.isclose(v / step, round(v / step), abs_tol=1e-6) for v in labels)
    values = [p["v"] for p in points]
    assert labels[0] < min(values) and labels[-1] > max(values)

    x_labels = harness.locator(".chart-axis-x text").all_text_contents()
    assert len(x_labels) >= 2 and all(x_labels)


def test_empty_range_says_so(harness: Page) -> None:
    draw(harness, [], T0, T0 + 60 * MINUTE)
    expect(harness.locator(".chart-empty")).to_have_text("No data in this range")
    expect(harness.locator(".chart-empty")).to_be_visible()
    expect(harness.locator("svg.chart")).to_have_attribute("data-points", "0")
    expect(harness.locator("svg.chart")).to_have_attribute("data-start", str(T0))


def test_gap_splits_the_line(harness: Page) -> None:
    # 30 one-minute buckets, 10 missing, then 30 more.
    points = series(30) + series(30, start=T0 + 40 * MINUTE)
    draw(harness, points, T0, T0 + 70 * MINUTE)
    d = harness.locator("path.chart-line").get_attribute("d") or ""
    assert d.count("M") == 2


def test_hover_shows_the_nearest_value(harness: Page) -> None:
    points = series(100)
    draw(harness, points, T0, T0 + 100 * MINUTE)
    tooltip = harness.locator(".chart-tooltip")
    expect(tooltip).to_be_hidden()
    box = plot_box(harness)
    # The middle of the domain is exactly point 50's time.
    harness.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(tooltip).to_be_visible()
    expect(tooltip).to_contain_text(f"{points[50]['v']:g}")
    expect(harness.locator(".chart-crosshair")).to_have_attribute("visibility", "visible")


def test_drag_selects_a_span(harness: Page) -> None:
    start, end = T0, T0 + 100 * MINUTE
    draw(harness, series(100), start, end)
    box = plot_box(harness)
    y = box["y"] + box["height"] / 2
    harness.mouse.click(box["x"] + box["width"] / 2, y)  # a click is not a zoom
    harness.mouse.move(box["x"] + box["width"] * 0.25, y)
    harness.mouse.down()
    harness.mouse.move(box["x"] + box["width"] * 0.75, y, steps=5)
    expect(harness.locator(".chart-selection")).to_have_attribute("visibility", "visible")
    harness.mouse.up()
    expect(harness.locator(".chart-selection")).to_have_attribute("visibility", "hidden")

    zooms: list[list[float]] = harness.evaluate("window.zooms")
    assert len(zooms) == 1
    zoom_start, zoom_end = zooms[0]
    assert start <= zoom_start < zoom_end <= end
    span = end - start
    assert abs(zoom_start - (start + span / 4)) < span / 50
    assert abs(zoom_end - (start + span * 3 / 4)) < span / 50


def test_width_follows_the_container(harness: Page) -> None:
    draw(harness, series(100), T0, T0 + 100 * MINUTE)
    harness.evaluate("document.getElementById('chart').style.width = '500px'")
    svg = harness.locator("svg.chart")
    expect(svg).to_have_attribute("width", "500")
    box = svg.bounding_box()
    assert box is not None and box["width"] == 500


def test_many_points(harness: Page) -> None:
    draw(harness, series(5000, step_ms=10_000), T0, T0 + 5000 * 10_000, bucket_ms=10_000)
    expect(harness.locator("svg.chart")).to_have_attribute("data-points", "5000")
    expect(harness.locator(".chart-dots circle")).to_have_count(0)
    assert (harness.locator("path.chart-line").get_attribute("d") or "").count("M") == 1


def test_several_series_share_the_axis_and_a_crosshair_spans_charts(harness: Page) -> None:
    """Devices compared on one chart (legend, a value each in the tooltip), a second metric
    on a right-hand axis, a group's min-max range shaded; hovering it shows the same time
    on a chart of states (a relay's on/off runs, labelled), and leaving hides both."""
    a = series(60)
    b = [{"t": p["t"], "v": p["v"] + 3} for p in a]
    pressure = [{"t": p["t"], "v": 1000 + p["v"]} for p in a]
    ranged = [{"t": p["t"], "v": p["v"], "lo": p["v"] - 1, "hi": p["v"] + 1} for p in a]
    relay = [{"t": T0 + i * 10 * MINUTE, "v": i % 2} for i in range(6)]
    listing = [
        {"label": "gh-1", "points": a},
        {"label": "gh-2", "points": b},
        {"label": "pressure", "points": pressure, "right": True},
        {"label": "group", "points": ranged, "range": True},
    ]
    harness.evaluate(
        "([l, s, st, e, b]) => makeLinked(l, s, st, e, b)",
        [
            listing,
            {"labels": {"0": "off", "1": "on"}, "points": relay},
            T0,
            T0 + 60 * MINUTE,
            MINUTE,
        ],
    )
    one = harness.locator("#one")
    expect(one.locator("svg.chart")).to_have_attribute("data-series", "4")
    expect(one.locator(".chart-legend li")).to_have_text(
        ["gh-1", "gh-2", "pressure (right axis)", "group"]
    )
    right = [float(t) for t in one.locator(".chart-axis-right text").all_text_contents()]
    assert right[0] < 1020 < right[-1]  # its own scale, not the left one's
    left = [float(t) for t in one.locator(".chart-axis-y text").all_text_contents()]
    assert left[-1] < 40
    assert len(one.locator("path.chart-range").get_attribute("d") or "") > 100

    two = harness.locator("#two")
    expect(two.locator("rect.chart-state")).to_have_count(6)
    assert two.locator("rect.chart-state").evaluate_all(
        "rects => rects.map((r) => r.dataset.state)"
    ) == ["off", "on", "off", "on", "off", "on"]

    box = one.locator(".chart-overlay").bounding_box()
    assert box is not None
    harness.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
    tip = one.locator(".chart-tooltip-value")
    expect(tip).to_contain_text("gh-1:")
    expect(tip).to_contain_text("gh-2:")
    expect(tip).to_contain_text("pressure:")
    expect(one.locator("circle.chart-focus")).to_have_count(4)
    # 30 % of an hour is in the relay's second run, which is "on".
    expect(two.locator(".chart-crosshair")).to_have_attribute("visibility", "visible")
    expect(two.locator(".chart-tooltip-value")).to_have_text("on")
    harness.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] + 200)
    expect(two.locator(".chart-crosshair")).to_have_attribute("visibility", "hidden")
    expect(one.locator(".chart-tooltip")).to_be_hidden()
