"""Grafana's PostgreSQL data source as the dashboard tests imitate it: a panel's query with
its macros and template variables expanded as Grafana sends it, run as `fieldline_reader`.

Shared by tests/storage/test_grafana_dashboard.py (contrib/grafana) and
tests/monitoring/test_grafana_ops.py (deploy/grafana's "From the database" row)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from fieldline.storage.reporting import READER

NOW = datetime.now(UTC).replace(microsecond=0)
TIME_FROM, TIME_TO = NOW - timedelta(hours=3), NOW + timedelta(minutes=1)
INTERVAL = "5m"
PASSWORD = "grafana-reader-password"


def grafana_time(moment: datetime) -> str:
    return "'" + moment.strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def seconds(interval: str) -> int:
    number, unit = int(interval[:-1]), interval[-1]
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def expand(sql: str, variables: dict[str, list[str] | str]) -> str:
    """`sql` as Grafana's PostgreSQL data source sends it. A list is a multi-value
    variable (quoted, comma-separated); a str is put in as it is (a single value, or a
    multi-value variable's "All" with its allValue)."""
    sql = sql.replace("$__interval", INTERVAL)
    sql = re.sub(
        r"\$__timeGroupAlias\(\s*([\w.\"]+)\s*,\s*'?(\w+)'?\s*\)",
        lambda m: f'floor(extract(epoch from {m[1]})/{seconds(m[2])})*{seconds(m[2])} AS "time"',
        sql,
    )
    sql = re.sub(
        r"\$__timeFilter\(\s*([\w.\"]+)\s*\)",
        lambda m: f"{m[1]} BETWEEN {grafana_time(TIME_FROM)} AND {grafana_time(TIME_TO)}",
        sql,
    )
    sql = sql.replace("$__timeFrom()", grafana_time(TIME_FROM))
    sql = sql.replace("$__timeTo()", grafana_time(TIME_TO))

    def variable(match: re.Match[str]) -> str:
        name, fmt = match["name"] or match["bare"], match["fmt"]
        value = variables[name]
        if isinstance(value, list):
            return ",".join(quoted(v) for v in value)
        return quoted(value) if fmt == "sqlstring" else value

    sql = re.sub(r"\$\{(?P<name>\w+)(?::(?P<fmt>\w+))?\}|\$(?P<bare>\w+)", variable, sql)
    assert "$" not in sql, f"not expanded: {sql}"
    return sql


def as_reader(url: str) -> str:
    return make_conninfo(**{**conninfo_to_dict(url), "user": READER, "password": PASSWORD})


def run(conn: psycopg.Connection[Any], sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cursor = conn.execute(sql.encode())
    assert cursor.description is not None
    return [column.name for column in cursor.description], cursor.fetchall()
