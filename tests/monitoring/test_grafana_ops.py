"""deploy/grafana's dashboard: a dashboard Grafana imports anywhere (its Prometheus and its
PostgreSQL chosen by variables), laid out on the grid, whose every Prometheus query is
PromQL that promtool parses and that names only metrics a fieldline process exposes, and
whose every PostgreSQL query answers as `fieldline_reader` from what the platform writes."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row

from fieldline import __version__
from fieldline.config import Settings
from fieldline.domain.alerts import Severity
from fieldline.domain.health import DOWN_AFTER_BEATS, Finding
from fieldline.ops.heartbeat import Heartbeat
from fieldline.ops.metrics import Metrics
from fieldline.storage import health as health_store
from fieldline.storage import notifications as notification_store
from fieldline.storage.db import open_pool
from fieldline.storage.migrate import migrate
from fieldline.storage.reporting import ensure_reader
from tests.conftest import create_devices
from tests.grafana_postgres import NOW, PASSWORD, as_reader, run
from tests.grafana_postgres import expand as expand_sql
from tests.monitoring.conftest import PROMETHEUS_DIR

DASHBOARD = PROMETHEUS_DIR.parent / "grafana" / "fieldline-ops.json"
CONTRIB = PROMETHEUS_DIR.parents[1] / "contrib" / "grafana" / "fieldline-dashboard.json"
GRID_COLUMNS = 24
PROMETHEUS = ("prometheus", "${datasource}")
POSTGRES = "grafana-postgresql-datasource"
DATABASE_ROW = "From the database"

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
    """(panel title, expr) of every Prometheus target."""
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == "prometheus"
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


def test_every_query_reads_a_data_source_chosen_by_a_variable() -> None:
    """Prometheus everywhere but the row "From the database", whose panels read
    PostgreSQL (as fieldline_reader, docs/grafana.md)."""
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    sources = {
        f"${{{name}}}": variable["query"]
        for name, variable in variables.items()
        if variable["type"] == "datasource"
    }
    assert sources == {"${datasource}": "prometheus", "${database}": POSTGRES}
    provisioned = yaml.safe_load((CONTRIB.parent / "fieldline-datasource.yaml").read_text())
    assert [source["type"] for source in provisioned["datasources"]] == [POSTGRES]
    queried = [v["datasource"] for v in variables.values() if v["type"] == "query"]
    assert {(d["type"], d["uid"]) for d in queried} == {("prometheus", "${datasource}")}
    row = ""
    for panel in board["panels"]:
        if panel["type"] == "row":
            assert "targets" not in panel, panel["title"]
            row = panel["title"]
            continue
        assert panel["targets"], panel["title"]
        expected = PROMETHEUS if row != DATABASE_ROW else (POSTGRES, "${database}")
        used = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        assert {(d["type"], d["uid"]) for d in used} == {expected}, panel["title"]
    assert row == DATABASE_ROW, "the database's row is the last"


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


def database_panels(board: dict[str, Any]) -> dict[str, str]:
    """Each PostgreSQL panel's title and its query."""
    found = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            if target["datasource"]["type"] == POSTGRES:
                assert target["rawQuery"] and target["editorMode"] == "code", panel["title"]
                found[panel["title"]] = target["rawSql"]
    return found


async def beat(url: str, role: str, name: str, metrics: Metrics | None = None) -> str:
    """One heartbeat as `name` writes it; its process's id."""
    pool = await open_pool(url, min_size=1, max_size=1)
    try:
        heartbeat = Heartbeat(
            url=url,
            role=role,
            name=name,
            parts=[role],
            metrics=metrics or Metrics(),
            interval=10.0,
            pool=pool,
        )
        await heartbeat.beat()
    finally:
        await pool.close()
    return heartbeat.id


async def seed_health(url: str) -> None:
    """What a platform writes about itself: heartbeats (an ingest restarted, a worker
    silent for five minutes), the failing checks the worker recorded and their system
    alerts, a failing channel's alert, devices and the ingest activity."""
    await migrate(url)
    await beat(url, "api", "api")
    restarted = await beat(url, "ingest", "ingest 1")
    ingest = Metrics()
    ingest.ingest_queue_depth.set(3)
    ingest.broker_connected.set(1)
    await beat(url, "ingest", "ingest 1", ingest)
    worker = await beat(url, "worker", "worker")
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:
        await conn.execute(
            "UPDATE processes SET started_at = now() - interval '2 hours',"
            " seen_at = now() - interval '1 hour', stopped_at = now() - interval '1 hour'"
            " WHERE id = %s",
            (restarted,),
        )
        await conn.execute(
            "UPDATE processes SET seen_at = now() - interval '5 minutes' WHERE id = %s",
            (worker,),
        )
        await record_checks(conn)
        await create_devices(conn, "d-1", "d-2", "d-3")
        await conn.execute(
            "UPDATE devices SET last_seen = CASE device_id WHEN 'd-3' THEN %s::timestamptz"
            " ELSE %s END",
            (NOW - timedelta(days=2), NOW),
        )
        # As ingest's writers count their batches: two writers in one bucket.
        await conn.execute(
            "INSERT INTO ingest_activity (bucket, writer, readings, points) VALUES"
            " (date_bin('10 s', %(now)s::timestamptz, 'epoch'), 101, 5, 10),"
            " (date_bin('10 s', %(now)s::timestamptz, 'epoch'), 102, 3, 6),"
            " (date_bin('10 s', %(now)s::timestamptz - interval '2 minutes', 'epoch'), 101, 4, 8),"
            " (date_bin('10 s', %(now)s::timestamptz - interval '5 hours', 'epoch'), 101, 9, 9)",
            {"now": NOW},
        )
        await ensure_reader(conn, PASSWORD)


async def record_checks(conn: health_store.Conn) -> None:
    findings = [
        Finding("broker_disconnected:ingest 1", Severity.CRITICAL, "ingest 1 has no broker", 120),
        Finding("ingest_backlog:ingest 1", Severity.WARNING, "ingest 1 holds 12,000", 300),
        Finding("worker_down", Severity.CRITICAL, "fieldline worker is down", 0),
    ]
    failing = await health_store.record_findings(conn, findings, NOW)
    for check in failing:  # the two that failed for their duration
        if check.severity == "critical":
            await health_store.open_system_alert(conn, check)
    # Resolved a day ago: not in the time range.
    old = health_store.Failing("disk_full", NOW - timedelta(days=2), "critical", "disk full")
    old_id = await health_store.open_system_alert(conn, old)
    assert old_id is not None
    await health_store.resolve_system_alert(conn, old_id, "check passed")
    await conn.execute(
        "UPDATE alerts SET resolved_at = %s WHERE id = %s", (NOW - timedelta(days=1), old_id)
    )
    # A channel that failed and came back within the time range.
    await notification_store.open_channel_alert(conn, 7, "ops webhook")
    await notification_store.resolve_channel_alert(conn, 7, "delivered again")
    await conn.execute(
        "UPDATE alerts SET started_at = %s, resolved_at = %s WHERE kind = 'channel'",
        (NOW - timedelta(minutes=30), NOW - timedelta(minutes=10)),
    )
    # A device's alert is not fieldline's own.
    await conn.execute(
        "INSERT INTO alerts (kind, rule_name, severity, device_id, started_at)"
        " VALUES ('rule', 'too hot', 'warning', 'd-1', %s)",
        (NOW,),
    )


# Migration 0025's views of fieldline's own health.
HEALTH_MIGRATION = 25
HEALTH_VIEWS = ["processes", "health_checks", "system_alerts", "ingest_activity"]

# What each PostgreSQL panel reads: its query's columns.
PROCESSES = "Processes and their last heartbeat"
DATABASE_PANEL_COLUMNS = {
    PROCESSES: [
        "process",
        "role",
        "host",
        "version",
        "started",
        "last heartbeat",
        "silent",
        "stopped",
        "peak memory",
        "queue",
        "broker",
    ],
    "Failing health checks": ["failing since", "severity", "check", "subject", "summary", "alert"],
    "System alerts in the time range": [
        "started",
        "resolved",
        "severity",
        "state",
        "kind",
        "alert",
    ],
    "Devices reporting": ["devices", "reporting"],
    "Readings stored per minute": ["time", "readings", "points"],
}


def test_the_processes_panel_turns_red_when_the_health_checks_call_a_process_down() -> None:
    (panel,) = [p for p in dashboard()["panels"] if p["title"] == PROCESSES]
    (silent,) = [
        o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == "silent"
    ]
    thresholds = {p["id"]: p["value"] for p in silent["properties"]}["thresholds"]
    red = {step["color"]: step["value"] for step in thresholds["steps"]}["red"]
    default_beat = Settings.model_fields["heartbeat_seconds"].default
    assert red == DOWN_AFTER_BEATS * default_beat


@pytest.mark.timeout(120)
async def test_every_database_panel_answers_as_the_reader(pg15_database_url: str) -> None:
    await seed_health(pg15_database_url)
    answers = {}
    with psycopg.connect(as_reader(pg15_database_url)) as conn:
        for title, sql in database_panels(dashboard()).items():
            answers[title] = run(conn, expand_sql(sql, {}))
    assert {title: columns for title, (columns, _) in answers.items()} == DATABASE_PANEL_COLUMNS

    _, processes = answers[PROCESSES]
    host = socket.gethostname()
    assert [(p, r, h, v) for p, r, h, v, *_ in processes] == [
        ("api", "api", host, __version__),
        ("ingest 1", "ingest", host, __version__),  # its latest start only
        ("worker", "worker", host, __version__),
    ]
    api, ingest, worker = processes
    assert api[6] < 60 and ingest[6] < 60  # within the panel's threshold: up
    assert worker[6] >= 300  # silent for five minutes: red
    assert [p[7] for p in processes] == [None, None, None]  # none stopped
    assert all(p[8] > 0 for p in processes)  # peak memory
    assert (ingest[9], ingest[10]) == (3.0, "connected")
    assert (api[9], api[10]) == (None, None)  # no ingest in it

    _, checks = answers["Failing health checks"]
    assert [row[1:] for row in checks] == [
        ("critical", "broker_disconnected", "ingest 1", "ingest 1 has no broker", "firing"),
        ("critical", "worker_down", None, "fieldline worker is down", "firing"),
        ("warning", "ingest_backlog", "ingest 1", "ingest 1 holds 12,000", "not yet"),
    ]
    assert {row[0] for row in checks} == {NOW}

    _, alerts = answers["System alerts in the time range"]
    seen = sorted((kind, name, state, end is None) for _, end, _, state, kind, name in alerts)
    assert seen == [
        ("channel", 'notification channel "ops webhook" failing', "resolved", False),
        ("system", "fieldline worker is down", "firing", True),
        ("system", "ingest 1 has no broker", "firing", True),
    ]
    assert alerts[-1][4] == "channel"  # newest first

    assert answers["Devices reporting"][1] == [(3, 2)]
    _, stored = answers["Readings stored per minute"]
    minute = 60
    assert [(float(t), r, p) for t, r, p in stored] == [
        ((NOW - timedelta(minutes=2)).timestamp() // minute * minute, 4, 8),
        (NOW.timestamp() // minute * minute, 5 + 3, 10 + 6),
    ]

    # Read-only: no write to the views (two would be updatable for a role allowed to),
    # and the tables behind them are not the reader's.
    with psycopg.connect(as_reader(pg15_database_url)) as conn:
        writable = conn.execute(
            "SELECT view FROM unnest(%s::text[]) AS view"
            " WHERE has_table_privilege('reporting.' || view, 'INSERT, UPDATE, DELETE, TRUNCATE')"
            " OR NOT has_table_privilege('reporting.' || view, 'SELECT')",
            (HEALTH_VIEWS,),
        ).fetchall()
        assert writable == []
    for statement in (
        "DELETE FROM reporting.processes",
        "UPDATE reporting.system_alerts SET state = 'resolved'",
        "SELECT * FROM processes",
        "SELECT * FROM health_checks",
        "SELECT * FROM alerts",
        "DELETE FROM health_checks",
    ):
        with (
            psycopg.connect(as_reader(pg15_database_url)) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(statement)


@pytest.mark.timeout(120)
async def test_a_reader_granted_before_the_upgrade_reads_the_health_views(
    pg15_database_url: str,
) -> None:
    """An external server's administrator grants the reporting views once (docs/data.md):
    the views an upgrade adds are the reader's too, with no grant run again."""
    await migrate(pg15_database_url, up_to=HEALTH_MIGRATION - 1)
    async with await psycopg.AsyncConnection.connect(pg15_database_url, autocommit=True) as conn:
        await ensure_reader(conn, PASSWORD)
    await migrate(pg15_database_url)
    with psycopg.connect(as_reader(pg15_database_url)) as conn:
        for view in HEALTH_VIEWS:
            assert run(conn, f"SELECT count(*) FROM reporting.{view}")[1] == [(0,)], view
