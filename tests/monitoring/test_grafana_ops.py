"""deploy/grafana's dashboard: a dashboard Grafana imports anywhere (its Prometheus chosen by
a variable), laid out on the grid, whose every query is PromQL that promtool parses and
that names only metrics a fieldline process exposes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from fieldline.ops.metrics import Metrics
from tests.monitoring.conftest import PROMETHEUS_DIR

DASHBOARD = PROMETHEUS_DIR.parent / "grafana" / "fieldline-ops.json"
CONTRIB = PROMETHEUS_DIR.parents[1] / "contrib" / "grafana" / "fieldline-dashboard.json"
GRID_COLUMNS = 24

# Metrics the dashboard leaves out, each on purpose: a metric added to ops/metrics.py
# fails the coverage test until it is shown or listed here.
NOT_SHOWN = {
    "fieldline_message_ids_forgotten",  # de-duplication ledger housekeeping
    "fieldline_archive_rows_written",  # the archive panel counts files
    "fieldline_archive_bytes_written",
    "fieldline_retention_dropped_bytes",  # the retention panel counts partitions
    "fieldline_retention_dropped_rows",
}
# Written by Prometheus for every target, not by fieldline.
SCRAPE_METRICS = {"up"}

# What Grafana puts in before a query reaches Prometheus.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "6h"}
VARIABLE_VALUES = {"job": "fieldline-.*", "instance": ".*"}

KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every target."""
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def expand(expr: str) -> str:
    """`expr` as Grafana sends it, with every variable a name of the dashboard or Grafana's."""

    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["bare"]
        if name.isdigit():  # label_replace's ${1}: Prometheus's, not Grafana's
            return match[0]
        if name in GRAFANA_VARIABLES:
            return GRAFANA_VARIABLES[name]
        assert name in VARIABLE_VALUES, f"unknown variable ${name} in {expr}"
        return VARIABLE_VALUES[name]

    return re.sub(r"\$\{(?P<braced>\w+)(?::\w+)?\}|\$(?P<bare>\w+)", value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers left once strings, label
    matchers, ranges and label lists are gone that are neither called (functions and
    aggregations: promtool refuses unknown ones) nor keywords."""
    text = STRINGS.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = LABEL_LISTS.sub(" ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        if not match[2] and match[1].lower() not in KEYWORDS:
            names.add(match[1])
    return names


def exposed() -> dict[str, str]:
    """The names Prometheus stores for a real fieldline registry, each to its family."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names: dict[str, str] = {}
    for family in Metrics().registry.collect():
        names.update((family.name + suffix, family.name) for suffix in suffixes[family.type])
        names.update((sample.name, family.name) for sample in family.samples)
    return names


def test_the_parser_finds_metric_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{job=~"x|y", le!="1"}[5m])))'
        ' / on (job) group_left (instance) b_total offset 5m > bool 2 and c unless sum(d{e="f"})'
        ' or label_replace(g, "h", "${1}", "i", "(j)")'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d", "g"}


def test_it_is_a_dashboard_with_the_contrib_dashboards_schema() -> None:
    board = dashboard()
    required = {"uid", "title", "schemaVersion", "panels", "templating", "time", "version"}
    assert required <= set(board)
    assert board["schemaVersion"] == json.loads(CONTRIB.read_text())["schemaVersion"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert all(panel["type"] and panel["title"] for panel in board["panels"])
    refs = [[t["refId"] for t in panel.get("targets", [])] for panel in board["panels"]]
    assert all(len(r) == len(set(r)) for r in refs), "a panel repeats a refId"


def test_every_query_reads_the_prometheus_chosen_by_a_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    sources = {
        f"${{{name}}}": variable["query"]
        for name, variable in variables.items()
        if variable["type"] == "datasource"
    }
    assert sources == {"${datasource}": "prometheus"}
    used = [v["datasource"] for v in variables.values() if v["type"] == "query"]
    for panel in board["panels"]:
        if panel["type"] == "row":
            assert "targets" not in panel, panel["title"]
            continue
        assert panel["targets"], panel["title"]
        used += [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
    assert {(d["type"], d["uid"]) for d in used} == {("prometheus", "${datasource}")}


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        x, y, w, h = grid["x"], grid["y"], grid["w"], grid["h"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0, panel["title"]
        assert x + w <= GRID_COLUMNS, f"{panel['title']} is wider than the grid"
        for cell in ((column, line) for column in range(x, x + w) for line in range(y, y + h)):
            assert cell not in taken, f"{panel['title']} overlaps {taken[cell]}"
            taken[cell] = panel["title"]


def test_every_query_names_only_metrics_fieldline_exposes() -> None:
    samples = exposed()
    read: set[str] = set()
    for title, expr in queries(dashboard()):
        names = metric_names(expand(expr))
        assert names, f"{title}: {expr} reads no metric"
        unknown = names - samples.keys() - SCRAPE_METRICS
        assert not unknown, f"{title}: {sorted(unknown)} are not fieldline metrics"
        read |= names
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.+), \w+\)", variable["definition"])
            assert selector, variable["definition"]
            assert metric_names(expand(selector[1])) <= SCRAPE_METRICS | samples.keys()

    families = set(samples.values())
    shown = {samples[name] for name in read - SCRAPE_METRICS}
    assert families >= NOT_SHOWN, "NOT_SHOWN names a metric that is gone"
    assert sorted(families - shown - NOT_SHOWN) == [], "metrics neither shown nor NOT_SHOWN"
    assert shown & NOT_SHOWN == set(), "a metric in NOT_SHOWN is shown"


def test_promtool_parses_every_query(promtool: str, tmp_path: Path) -> None:
    rules = [
        {"record": f"fieldline:dashboard_query_{number}", "expr": expand(expr)}
        for number, (_, expr) in enumerate(queries(dashboard()))
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
