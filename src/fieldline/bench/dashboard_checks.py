"""What the dashboard showed on each load, against what was seeded (`dashboard` scenario).

The overview's table must show its first page of the registry's devices, its pager
and subtitle the registry's size; the device page a tile and a chart per metric, each
chart with the points its range holds at the bucket width the page asked for; the
group page its table's page of devices, every device of the map group on its map and
a day of trend; the compare view a series of a day per device and the group's trend.
Any difference fails the run.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fieldline.bench.dashboard_api import CHART_BUCKET
from fieldline.bench.dashboard_load import Load
from fieldline.bench.dashboard_pages import (
    CHART_RANGE,
    CHART_RANGE_DAYS,
    COMPARE,
    COMPARE_DEVICES,
    GROUP,
    GROUP_ROWS,
    MAP_DEVICES,
    OVERVIEW,
    OVERVIEW_ROWS,
    RenderError,
)
from fieldline.bench.queries import METRICS


def _seconds(width: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    return int(width[:-1]) * units[width[-1]]


def _views_problems(load: Load, where: str) -> list[str]:
    """The group page's and the compare view's load: a day of 5 min buckets (288)."""
    shown = load.shown
    problems = []
    if not 0.95 * 288 <= shown["trend"] <= 290:
        problems.append(f"{where}: the group's trend has {shown['trend']} points, not 288")
    if load.page == GROUP.name:
        if shown["rows"] != GROUP_ROWS or shown["markers"] != MAP_DEVICES:
            problems.append(
                f"{where}: {shown['rows']} rows and {shown['markers']} markers, not"
                f" {GROUP_ROWS} and {MAP_DEVICES}"
            )
        return problems
    if shown["series"] != COMPARE_DEVICES or shown["legend"] != COMPARE_DEVICES:
        problems.append(f"{where}: {shown['series']} series, not {COMPARE_DEVICES}")
    if not 0.95 * 288 * COMPARE_DEVICES <= shown["points"] <= 290 * COMPARE_DEVICES:
        problems.append(f"{where}: {shown['points']} points, not 288 per device")
    return problems


def check_loads(loads: list[Load], *, devices: int, days: int) -> list[str]:
    """What each load showed, against what was seeded; raises on any difference.

    `devices` in the registry, `days` of history of the chart device.
    """
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
            if load.shown["rows"] != min(OVERVIEW_ROWS, devices):
                problems.append(f"{where}: {load.shown['rows']} rows in the devices table")
            if not load.shown["range"].endswith(f"of {devices:,}"):
                problems.append(f"{where}: the pager says {load.shown['range']!r}")
            if not load.shown["subtitle"].startswith(f"{devices:,} devices"):
                problems.append(f"{where}: the subtitle says {load.shown['subtitle']!r}")
            continue
        if load.page in (GROUP.name, COMPARE.name):
            problems += _views_problems(load, where)
            continue
        charts = load.shown["charts"]
        if sorted(chart["metric"] for chart in charts) != names:
            problems.append(f"{where}: charts of {[c['metric'] for c in charts]}, not {names}")
        if sorted(load.shown["tiles"]) != names:
            problems.append(f"{where}: tiles of {load.shown['tiles']}, not {names}")
        asked = {
            parse_qs(urlsplit(url).query).get("bucket", [""])[0]
            for url in (entry["name"] for entry in load.resources)
            if urlsplit(url).path.endswith(("/telemetry", "/series"))
        }
        buckets |= asked
        if len(asked) != 1 or "" in asked:
            problems.append(f"{where}: charts asked for buckets {sorted(asked)}")
            continue
        width = _seconds(next(iter(asked)))
        covered = min(days, CHART_RANGE_DAYS) * 86_400
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
    # Tiles cannot be fetched here (the browser is kept off the network): the grid shows.
    errors = sorted({error for load in loads for error in load.console_errors})
    notes = [
        f"Checked on every load: the overview's table showed {sorted(rows)} rows and its"
        f" pager {sorted(ranges)}; the device page showed {len(names)} tiles and"
        f" {len(names)} charts ({', '.join(names)}) of {min(points)}–{max(points)} points"
        f" ({', '.join(sorted(buckets))} buckets over {CHART_RANGE}); the group page"
        f" {GROUP_ROWS} rows, {MAP_DEVICES:,} devices on its map and a day's trend; the"
        f" compare view {COMPARE_DEVICES} devices' day and the group's trend.",
    ]
    if buckets != {CHART_BUCKET}:
        notes.append(
            f"The charts asked for {sorted(buckets)} buckets; the server-side table's chart"
            f" request uses {CHART_BUCKET}."
        )
    if errors:
        notes.append(f"Errors the pages logged: {errors}.")
    return notes
