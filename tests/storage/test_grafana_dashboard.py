"""contrib/grafana as Grafana would run it: every panel's and variable's query, its macros
and template variables expanded as Grafana's PostgreSQL data source expands them, run as
`fieldline_reader` against real data, answering the columns its panel reads."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row

from fieldline.domain.readings import Reading
from fieldline.storage.migrate import migrate
from fieldline.storage.reporting import READER, ensure_reader
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.conftest import create_devices
from tests.grafana_postgres import NOW, PASSWORD, as_reader, expand, run

CONTRIB = Path(__file__).parents[2] / "contrib" / "grafana"

# What each panel reads: its query's columns.
PANEL_COLUMNS = {
    "Devices": ["devices", "reporting"],
    "${metric:text} per device": ["time", "metric", "value"],
    "Latest values": ["device", "group", "metric", "value", "unit", "time"],
}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CONTRIB / "fieldline-dashboard.json").read_text())
    return loaded


async def seed(url: str) -> None:
    await migrate(url)
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:
        await create_devices(conn, "gh-1", "gh-2", "tr-1", "lone")
        await conn.execute("INSERT INTO groups (name) VALUES ('north'), ('south')")
        await conn.execute(
            "UPDATE devices SET device_type = 'greenhouse',"
            " group_id = (SELECT id FROM groups WHERE name = 'north')"
            " WHERE device_id IN ('gh-1', 'gh-2')"
        )
        await conn.execute("UPDATE devices SET name = 'Greenhouse 1' WHERE device_id = 'gh-1'")
        await conn.execute(
            "UPDATE devices SET device_type = 'tracker',"
            " group_id = (SELECT id FROM groups WHERE name = 'south') WHERE device_id = 'tr-1'"
        )
        await conn.execute(
            "INSERT INTO metric_metadata (device_type, metric, display_name, unit, decimals,"
            " updated_by) VALUES ('greenhouse', 'temperature', 'Air temperature', '°C', 1, 't'),"
            " ('*', 'humidity', 'Humidity', '%', 0, 't')"
        )
        for device, metrics in (
            ("gh-1", {"temperature": 21.5, "humidity": 60.0}),
            ("gh-2", {"temperature": 23.0, "humidity": 55.0}),
            ("tr-1", {"speed": 12.0}),
        ):
            readings = [
                Reading(
                    message_id=f"{device}-{i}",
                    time=NOW - timedelta(minutes=10 * i),
                    metrics={name: value + i / 10 for name, value in metrics.items()},
                    attributes={},
                )
                for i in range(12)  # two hours, every ten minutes
            ]
            batch = Batch(telemetry=[DeviceReadings(device, NOW, readings)])
            await write_batch(conn, batch, PartitionCache())  # type: ignore[arg-type]
        # As ingest keeps it for devices heard from.
        await conn.execute("UPDATE devices SET last_seen = %s WHERE device_id <> 'lone'", (NOW,))
        await ensure_reader(conn, PASSWORD)


@pytest.mark.timeout(120)
async def test_every_panel_and_variable_query_answers_as_the_reader(
    pg15_database_url: str,
) -> None:
    await seed(pg15_database_url)
    board = dashboard()
    queries = {v["name"]: v["query"] for v in board["templating"]["list"]}
    assert list(queries) == ["group", "device", "metric"]
    everything = {"group": "'*'", "device": ["gh-1", "gh-2", "tr-1", "lone"]}

    with psycopg.connect(as_reader(pg15_database_url)) as conn:
        # The variables, each as the ones before it leave it.
        columns, groups = run(conn, expand(queries["group"], {}))
        assert groups == [("north",), ("south",)]
        columns, devices = run(conn, expand(queries["device"], {"group": "'*'"}))
        assert columns == ["__value", "__text"]
        assert sorted(devices) == [
            ("gh-1", "Greenhouse 1"),
            ("gh-2", "gh-2"),  # no name: its id
            ("lone", "lone"),  # in no group: there under All
            ("tr-1", "tr-1"),
        ]
        _, north = run(conn, expand(queries["device"], {"group": ["north"]}))
        assert sorted(north) == [("gh-1", "Greenhouse 1"), ("gh-2", "gh-2")]
        _, metrics = run(conn, expand(queries["metric"], {"device": ["gh-1", "gh-2"]}))
        assert metrics == [("temperature", "Air temperature"), ("humidity", "Humidity")]

        # The panels, over every device and the first metric.
        chosen = {**everything, "metric": "temperature"}
        answers: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
        for panel in board["panels"]:
            for target in panel["targets"]:
                answers[panel["title"]] = run(conn, expand(target["rawSql"], chosen))
        assert {title: columns for title, (columns, _) in answers.items()} == PANEL_COLUMNS

    _, count = answers["Devices"]
    assert count == [(4, 3)]  # lone never reported
    _, series = answers["${metric:text} per device"]
    assert {name for _, name, _ in series} == {"Greenhouse 1 (°C)", "gh-2 (°C)"}
    assert all(float(bucket) % 300 == 0 for bucket, _, _ in series)
    assert len(series) >= 2 * 12 // 2  # readings every 10 minutes in 5-minute buckets
    _, latest = answers["Latest values"]
    assert [(d, g, m, round(v, 1), u) for d, g, m, v, u, _ in latest] == [
        ("Greenhouse 1", "north", "Air temperature", 21.5, "°C"),
        ("Greenhouse 1", "north", "Humidity", 60.0, "%"),
        ("gh-2", "north", "Air temperature", 23.0, "°C"),
        ("gh-2", "north", "Humidity", 55.0, "%"),
        ("tr-1", "south", "speed", 12.0, ""),
    ]


def test_the_data_source_is_the_reader_with_its_password_from_the_environment() -> None:
    provisioning = yaml.safe_load((CONTRIB / "fieldline-datasource.yaml").read_text())
    (source,) = provisioning["datasources"]
    assert source["user"] == READER
    assert source["jsonData"]["database"] == "fieldline"
    assert source["secureJsonData"]["password"] == "${FIELDLINE_READER_PASSWORD}"
    assert source["url"] == "${FIELDLINE_DATABASE_HOST}:${FIELDLINE_DATABASE_PORT}"
    board = dashboard()
    used = [p["datasource"] for p in board["panels"]]
    used += [t["datasource"] for p in board["panels"] for t in p["targets"]]
    used += [v["datasource"] for v in board["templating"]["list"]]
    assert {(d["type"], d["uid"]) for d in used} == {(source["type"], source["uid"])}
