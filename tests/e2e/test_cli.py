"""The CLI as a user runs it, against a running `fieldline up`: one platform (PostgreSQL 15
and amqtt) is enough, since its commands speak to the API; the broker paths they end in
are the e2e lifecycle tests', on both platforms."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg.rows import dict_row

from fieldline.domain.readings import Reading
from fieldline.storage.migrate import available_migrations
from fieldline.storage.writer import Batch, DeviceReadings, PartitionCache, write_batch
from tests.api.conftest import platform_on_pg15
from tests.conftest import PgServer, create_devices
from tests.e2e.conftest import ADMIN_PASSWORD, DeviceClient, Platform


@pytest.fixture(scope="module")
def platform(pg15: PgServer) -> Iterator[Platform]:
    with platform_on_pg15(pg15, "cli", {"FIELDLINE_BROKER": "amqtt"}) as running:
        yield running


def fieldline(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldline", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


async def test_device_commands_go_through_the_api(platform: Platform) -> None:
    api = {
        "FIELDLINE_API_URL": platform.api_url,
        "FIELDLINE_API_USERNAME": "admin",
        "FIELDLINE_API_PASSWORD": ADMIN_PASSWORD,
    }
    created = fieldline("device", "create", "cli-dev-1", "--name", "From the CLI", env=api)
    assert created.returncode == 0, created.stderr
    password = next(
        line.split()[2] for line in created.stdout.splitlines() if "MQTT password" in line
    )
    client = await DeviceClient("cli-dev-1", password, platform.mqtt_port).connect()
    listed = fieldline("device", "list", env=api)
    assert listed.returncode == 0 and "cli-dev-1" in listed.stdout
    as_json = json.loads(fieldline("device", "list", "--json", env=api).stdout)
    assert "cli-dev-1" in [d["device_id"] for d in as_json]
    shown = fieldline("device", "show", "cli-dev-1", env=api)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^name\s+From the CLI$", shown.stdout, re.M), shown.stdout
    assert json.loads(fieldline("device", "show", "cli-dev-1", "--json", env=api).stdout)["status"][
        "enabled"
    ]

    # Configuration: values as JSON where they parse, text otherwise; null removes a key.
    changed = fieldline("config", "set", "cli-dev-1", "interval=30", "mode=eco", "x=1", env=api)
    assert changed.returncode == 0, changed.stderr
    assert fieldline("config", "set", "cli-dev-1", "x=null", env=api).returncode == 0
    state = json.loads(fieldline("config", "get", "cli-dev-1", "--json", env=api).stdout)
    assert state["effective"] == {"interval": 30, "mode": "eco"}
    bad = fieldline("config", "set", "cli-dev-1", "interval", env=api)
    assert bad.returncode == 2 and "'interval' is not KEY=VALUE" in bad.stderr

    # A command the device answers, waited for as a script would.
    assert await client.subscribe("devices/cli-dev-1/commands") == 1
    client.publish("status", json.dumps({"status": "online"}))

    async def answer() -> None:
        while not client.received:
            await asyncio.sleep(0.05)
        sent = json.loads(client.received[-1][1])
        result = {"command_id": sent["command_id"], "status": "succeeded", "result": {"up": 1}}
        client.publish("commands/result", json.dumps(result))

    answering = asyncio.create_task(answer())
    waited = await asyncio.to_thread(
        fieldline, "command", "send", "cli-dev-1", "reboot", "--params", '{"delay": 5}',
        "--timeout", "60", "--wait", env=api,
    )  # fmt: skip
    await answering
    assert waited.returncode == 0, waited.stderr
    assert re.search(r"command [0-9a-f-]+ to cli-dev-1: succeeded", waited.stdout), waited.stdout
    assert '"up": 1' in waited.stdout
    refused = fieldline("command", "send", "cli-dev-1", "reboot", "--params", "[1]", env=api)
    assert refused.returncode == 2 and "a JSON object" in refused.stderr
    disabled = fieldline("device", "disable", "cli-dev-1", env=api)
    assert disabled.returncode == 0, disabled.stderr
    await client.disconnected.wait()
    again = fieldline("device", "create", "cli-dev-1", env=api)
    assert again.returncode == 1 and "409 conflict" in again.stderr
    wrong = fieldline("device", "list", env={**api, "FIELDLINE_API_PASSWORD": "not-the-one"})
    assert wrong.returncode == 1 and "401" in wrong.stderr
    deleted = fieldline("device", "delete", "cli-dev-1", "--yes", env=api)
    assert deleted.returncode == 0 and "device cli-dev-1 deleted" in deleted.stdout
    gone = fieldline("device", "show", "cli-dev-1", env=api)
    assert gone.returncode == 1 and "404" in gone.stderr


def test_user_create_and_migrate_on_an_external_database(pg15_database_url: str) -> None:
    env = {"DATABASE_URL": pg15_database_url, "FIELDLINE_LOG_LEVEL": "WARNING"}
    migrated = fieldline("migrate", env=env)
    applied = len(available_migrations())
    assert migrated.returncode == 0 and f"{applied} migration(s) applied" in migrated.stdout
    assert "schema is up to date" in fieldline("migrate", env=env).stdout
    created = fieldline(
        "user",
        "create",
        "ops",
        "--role",
        "operator",
        env={**env, "FIELDLINE_NEW_USER_PASSWORD": "operator-password"},
    )
    assert created.returncode == 0, created.stderr
    assert "user ops created with role operator" in created.stdout
    twice = fieldline("user", "create", "ops", "--password", "operator-password", env=env)
    assert twice.returncode == 1 and "already exists" in twice.stderr
    changed = fieldline("user", "passwd", "ops", "--password", "another-operator-pw", env=env)
    assert changed.returncode == 0 and "password of ops changed" in changed.stdout
    with psycopg.connect(pg15_database_url) as conn:
        audit = conn.execute(
            "SELECT actor, action FROM audit_log WHERE target_id = 'ops'"
        ).fetchall()
    assert audit == [("cli", "user.update")]
    nobody = fieldline("user", "passwd", "nobody", "--password", "another-operator-pw", env=env)
    assert nobody.returncode == 1 and "user 'nobody' does not exist" in nobody.stderr
    weak = fieldline("user", "passwd", "ops", "--password", "short", env=env)
    assert weak.returncode == 1 and "Traceback" not in weak.stderr
    users = json.loads(fieldline("user", "list", "--json", env=env).stdout)
    assert [(u["username"], u["role"]) for u in users] == [("ops", "operator")]
    assert re.search(r"^ops\s+operator\s+\d{4}-", fieldline("user", "list", env=env).stdout, re.M)


async def test_retention_runs_once_from_the_cli(pg15_database_url: str) -> None:
    """`fieldline worker --once --job retention`, as cron or a user would run it: the day
    of raw points past 30 days goes, yesterday's stays, and its hour is still charted."""
    env = {"DATABASE_URL": pg15_database_url, "FIELDLINE_LOG_LEVEL": "WARNING"}
    assert fieldline("migrate", env=env).returncode == 0
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    async with await psycopg.AsyncConnection.connect(
        pg15_database_url, autocommit=True, row_factory=dict_row
    ) as conn:
        await create_devices(conn, "silo-1")
        readings = [
            Reading(message_id=name, time=time, metrics={"level": 4.0}, attributes={})
            for name, time in (("old", old), ("recent", recent))
        ]
        batch = Batch(telemetry=[DeviceReadings("silo-1", now, readings)])
        await write_batch(conn, batch, PartitionCache())

    ran = fieldline("worker", "--once", "--job", "retention", env=env)
    assert ran.returncode == 0, ran.stderr
    assert f"retention: raw dropped telemetry_p{old:%Y%m%d}; hourly dropped nothing" in ran.stdout
    async with await psycopg.AsyncConnection.connect(pg15_database_url) as conn:
        points = await (await conn.execute("SELECT time FROM telemetry")).fetchall()
        hours = await (await conn.execute("SELECT count FROM telemetry_hourly")).fetchall()
    assert [row[0] for row in points] == [recent]
    assert [row[0] for row in hours] == [1, 1]

    unknown = fieldline("worker", "--once", "--job", "retain", env=env)
    assert unknown.returncode == 2 and "no job 'retain'" in unknown.stderr
    assert "retention" in unknown.stderr
    refused = fieldline("worker", "--once", env={**env, "FIELDLINE_RETENTION_HOURLY_DAYS": "10"})
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "FIELDLINE_RETENTION_HOURLY_DAYS=10 keeps rollups for less time" in refused.stderr


def test_an_unreachable_database_is_a_clear_error() -> None:
    """DATABASE_URL naming a server that is down: one line saying so, no traceback."""
    from fieldline.ops.sockets import free_port

    env = {"DATABASE_URL": f"postgresql://fieldline:pw@127.0.0.1:{free_port('127.0.0.1')}/x"}
    for args in (("migrate",), ("archive", "run", "--archive-url", "/nonexistent")):
        ran = fieldline(*args, env=env)
        assert ran.returncode == 1, ran.stdout
        assert "Error: cannot reach the database: connection failed" in ran.stderr
        assert "Traceback" not in ran.stderr


def test_user_create_without_a_database_says_where_to_find_one(tmp_path: Path) -> None:
    """No data directory here (the default `fieldline-data` is relative), then an empty one:
    a clear error, and nothing created, as a mistyped --data-dir must not make a new,
    empty instance."""
    empty = tmp_path / "empty"
    empty.mkdir()
    own = {key for key in os.environ if key.startswith("FIELDLINE_") or key == "DATABASE_URL"}
    clean = {key: value for key, value in os.environ.items() if key not in own}
    for env in (clean, {**clean, "FIELDLINE_DATA_DIR": str(empty)}):
        created = subprocess.run(
            [sys.executable, "-m", "fieldline", "user", "create", "ops", "--password", "pw" * 6],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
            check=False,
        )
        assert created.returncode == 1, created.stdout
        assert "no fieldline database in" in created.stderr
        assert "--data-dir" in created.stderr and "DATABASE_URL" in created.stderr
        assert "Traceback" not in created.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["empty"]


def test_invalid_settings_are_refused_with_a_clear_message() -> None:
    refused = fieldline("migrate", env={"FIELDLINE_SECRET_KEY": "changeme"})
    assert refused.returncode == 1
    assert "invalid settings" in refused.stderr and "placeholder" in refused.stderr


async def test_provisioning_keys_from_the_cli(platform: Platform) -> None:
    api = {
        "FIELDLINE_API_URL": platform.api_url,
        "FIELDLINE_API_USERNAME": "admin",
        "FIELDLINE_API_PASSWORD": ADMIN_PASSWORD,
    }
    created = fieldline("provisioning-key", "create", "line-4", "--max-uses", "2", env=api)
    assert created.returncode == 0, created.stderr
    key_id = created.stdout.split()[2]
    assert "--provision-key " + key_id + ":" in created.stdout
    listed = fieldline("provisioning-key", "list", env=api)
    assert listed.returncode == 0 and key_id in listed.stdout and "0/2" in listed.stdout
    keys = json.loads(fieldline("provisioning-key", "list", "--json", env=api).stdout)
    assert [(k["uses"], k["max_uses"]) for k in keys if k["key_id"] == key_id] == [(0, 2)]
    revoked = fieldline("provisioning-key", "revoke", key_id, env=api)
    assert revoked.returncode == 0, revoked.stderr
    again = fieldline("provisioning-key", "list", env=api)
    line = next(line for line in again.stdout.splitlines() if key_id in line)
    assert "revoked" in line


async def test_export_writes_a_devices_points_as_csv(platform: Platform, tmp_path: Path) -> None:
    api = {
        "FIELDLINE_API_URL": platform.api_url,
        "FIELDLINE_API_USERNAME": "admin",
        "FIELDLINE_API_PASSWORD": ADMIN_PASSWORD,
    }
    password = await platform.register("cli-export-1")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    sent = [
        {"timestamp": (start + timedelta(minutes=i)).timestamp(), "sensors": {"rpm": 1500.5 + i}}
        for i in range(90)
    ]
    async with httpx.AsyncClient() as http:
        stored = await http.post(
            f"{platform.api_url}/api/v1/devices/cli-export-1/telemetry",
            json={"readings": sent},
            auth=("cli-export-1", password),
        )
    assert stored.status_code == 202, stored.text
    target = tmp_path / "rpm.csv"
    args = ["export", "--device", "cli-export-1", "--from", start.isoformat(), "-o", str(target)]
    written = await asyncio.to_thread(fieldline, *args, env=api)
    assert written.returncode == 0, written.stderr
    assert "90 points written to" in written.stderr
    rows = target.read_text().splitlines()
    assert rows[0] == "time,device_id,metric,value,unit"
    assert rows[1] == f"{start:%Y-%m-%dT%H:%M:%S}.000000Z,cli-export-1,rpm,1500.5,"
    assert len(rows) == 91
    to_stdout = await asyncio.to_thread(fieldline, *args[:-2], env=api)
    assert to_stdout.stdout == target.read_text()
    as_parquet = tmp_path / "rpm.parquet"
    args = [*args[:-2], "--format", "parquet", "-o", str(as_parquet)]
    written = await asyncio.to_thread(fieldline, *args, env=api)
    assert written.returncode == 0, written.stderr
    assert "90 points written to" in written.stderr
    table = pq.read_table(as_parquet)
    assert table.column("value").to_pylist() == [1500.5 + i for i in range(90)]
    assert table.column("time")[0].as_py() == start
    unknown = fieldline("export", "--device", "nobody-here", env=api)
    assert unknown.returncode == 1 and "no such device: nobody-here" in unknown.stderr
