"""`fieldline doctor` against real servers, each test planting the fault a user would meet."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.rows import dict_row

from fieldline.cli import main
from fieldline.config import Settings
from fieldline.ops.doctor import Status, diagnose
from fieldline.ops.sockets import free_port
from fieldline.security.certs import SERVER_DAYS, issue_certificates
from fieldline.storage.migrate import available_migrations, migrate
from tests.conftest import create_devices
from tests.deployment import MosquittoServer


def doctor(env: dict[str, str], *args: str) -> tuple[int, dict[str, dict[str, str]], str]:
    """Exit code, each check's finding by name (the last of a name), and the text output."""
    runner = CliRunner()
    report = runner.invoke(main, ["doctor", "--json", *args], env=env)
    text = runner.invoke(main, ["doctor", *args], env=env)
    assert report.exit_code == text.exit_code, text.output
    checks = {check["check"]: check for check in json.loads(report.stdout)["checks"]}
    return report.exit_code, checks, text.output


def statuses(checks: dict[str, dict[str, str]]) -> dict[str, str]:
    return {name: check["status"] for name, check in checks.items()}


@pytest.fixture
def env(workdir: Path) -> dict[str, str]:
    """No database yet, no TLS, free HTTP port: the settings every test starts from."""
    cleared = {name: None for name in os.environ if name.startswith("FIELDLINE_")}
    return {
        **cleared,  # type: ignore[dict-item]
        "DATABASE_URL": None,  # type: ignore[dict-item]
        "FIELDLINE_DATA_DIR": str(workdir / "data"),
        "FIELDLINE_HTTP_PORT": str(free_port("127.0.0.1")),
        "FIELDLINE_MQTT_PORT": str(free_port("127.0.0.1")),
        "FIELDLINE_BROKER": "amqtt",
    }


@pytest.fixture
def mosquitto(workdir: Path, mosquitto_installed: None) -> Iterator[MosquittoServer]:
    server = MosquittoServer(workdir / "mosquitto")
    asyncio.run(server.start())
    yield server
    server.stop()


def production(env: dict[str, str], database_url: str, broker: MosquittoServer) -> dict[str, str]:
    return {
        **env,
        "DATABASE_URL": database_url,
        "FIELDLINE_BROKER": "external",
        "FIELDLINE_MQTT_PORT": str(broker.port),
        "FIELDLINE_BROKER_ADMIN_USERNAME": broker.admin_username,
        "FIELDLINE_BROKER_ADMIN_PASSWORD": broker.admin_password,
        "FIELDLINE_BROKER_SERVICE_USERNAME": "fieldline-ingest",
        "FIELDLINE_BROKER_SERVICE_PASSWORD": "a-long-service-password-4711",
    }


def test_a_healthy_production_setup_then_drift_a_wrong_admin_and_a_stopped_broker(
    env: dict[str, str], pg15_database_url: str, mosquitto: MosquittoServer
) -> None:
    asyncio.run(migrate(pg15_database_url))
    issue_certificates(Path(env["FIELDLINE_DATA_DIR"]) / "certs")
    settings = production(env, pg15_database_url, mosquitto)

    code, checks, text = doctor(settings)

    assert code == 0, text
    found = statuses(checks)
    # The disk is this machine's: not a fault the test planted, so it may be short of room.
    assert found.pop("disk") in ("ok", "warning")
    assert set(found.values()) == {"ok"}, text
    assert set(found) >= {"settings", "HTTP port", "database", "PostgreSQL version"}
    assert set(found) >= {"migrations", "clock", "broker", "dynamic security"}
    assert set(found) >= {"TLS CA", "TLS certificate", "TLS key"}
    assert "nothing stops fieldline" in text

    # A device in the registry the broker does not know.
    async def register() -> None:
        async with await psycopg.AsyncConnection.connect(
            pg15_database_url, row_factory=dict_row
        ) as conn:
            await create_devices(conn, "sensor-1")
            await conn.commit()

    asyncio.run(register())
    code, checks, text = doctor(settings)
    assert code == 1
    assert checks["dynamic security"]["status"] == "problem"
    assert "1 missing" in checks["dynamic security"]["found"]
    assert "`fieldline broker drift --fix`" in checks["dynamic security"]["fix"]

    wrong_admin = {**settings, "FIELDLINE_BROKER_ADMIN_PASSWORD": "not-the-admin-password"}
    code, checks, text = doctor(wrong_admin)
    assert code == 1
    assert checks["dynamic security"]["status"] == "problem"
    assert "FIELDLINE_BROKER_ADMIN_PASSWORD" in checks["dynamic security"]["fix"]

    mosquitto.stop()
    code, checks, text = doctor(settings)
    assert code == 1
    assert checks["broker"]["status"] == "problem"
    assert f"nothing accepts MQTT at 127.0.0.1:{mosquitto.port}" in checks["broker"]["found"]
    assert "start the broker" in checks["broker"]["fix"]
    assert checks["dynamic security"]["status"] == "skipped"
    assert "PROBLEM  broker" in text and "→ start the broker" in text


def test_a_wrong_database_password(env: dict[str, str], pg15_database_url: str) -> None:
    user, _, rest = pg15_database_url.removeprefix("postgresql://").partition(":")
    wrong = f"postgresql://{user}:not-the-password@{rest.partition('@')[2]}"

    code, checks, text = doctor({**env, "DATABASE_URL": wrong})

    assert code == 1
    database = checks["database"]
    assert database["status"] == "problem"
    assert database["found"] == f'DATABASE_URL: password authentication failed for user "{user}"'
    assert database["fix"] == "check the password in DATABASE_URL"
    assert {checks[name]["status"] for name in ("migrations", "clock")} == {"skipped"}
    assert "not-the-password" not in text


def test_a_database_behind_or_ahead_of_the_code(
    env: dict[str, str], pg15_database_url: str
) -> None:
    asyncio.run(migrate(pg15_database_url))
    last = available_migrations()[-1]
    with psycopg.connect(pg15_database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (last.version,))
    behind = {**env, "DATABASE_URL": pg15_database_url}

    code, checks, _ = doctor(behind)

    assert code == 1
    assert checks["migrations"] == {
        "check": "migrations",
        "status": "problem",
        "found": f"1 migration(s) not applied: {last.version:04d}_{last.name}",
        "fix": "`fieldline migrate`",
    }

    with psycopg.connect(pg15_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
            (last.version, last.name),
        )
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
    code, checks, _ = doctor(behind)
    assert code == 1
    assert checks["migrations"]["status"] == "problem"
    assert "9999" in checks["migrations"]["found"]
    assert "a newer fieldline migrated it" in checks["migrations"]["found"]


async def test_clock_skew_against_the_database(pg15_database_url: str, workdir: Path) -> None:
    await migrate(pg15_database_url)
    settings = Settings(database_url=pg15_database_url, data_dir=workdir, broker="amqtt")

    def clock(ahead: float) -> Any:
        return lambda: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ahead)

    found = {f.check: f for f in await diagnose(settings, clock=clock(0))}
    assert found["clock"].status == Status.OK
    found = {f.check: f for f in await diagnose(settings, clock=clock(10))}
    assert found["clock"].status == Status.WARNING
    found = {f.check: f for f in await diagnose(settings, clock=clock(-60))}
    assert found["clock"].status == Status.PROBLEM
    assert "s ahead of this machine's" in found["clock"].found


def test_an_expired_certificate_a_soon_expiring_one_and_a_wrong_key(
    env: dict[str, str],
) -> None:
    certs = Path(env["FIELDLINE_DATA_DIR"]) / "certs"
    now = dt.datetime.now(dt.UTC)
    # Issued as if SERVER_DAYS + 1 days ago: expired yesterday.
    issue_certificates(certs, now=now - dt.timedelta(days=SERVER_DAYS + 1))

    code, checks, text = doctor(env)

    assert code == 1, text
    assert checks["TLS certificate"]["status"] == "problem"
    assert checks["TLS certificate"]["found"].startswith(f"{certs / 'server.crt'} expired ")
    assert "`fieldline certs`" in checks["TLS certificate"]["fix"]
    assert checks["TLS CA"]["status"] == "ok"
    assert checks["database"]["status"] == "warning"  # no `up` ran here yet

    issue_certificates(certs, now=now - dt.timedelta(days=SERVER_DAYS - 10))
    code, checks, _ = doctor(env)
    assert code == 0
    assert checks["TLS certificate"]["status"] == "warning"
    assert "(in 9 days)" in checks["TLS certificate"]["found"]

    shutil.copy(certs / "ca.key", certs / "server.key")
    code, checks, _ = doctor(env)
    assert code == 1
    assert checks["TLS key"]["status"] == "problem"
    assert "is not the key of the TLS certificate" in checks["TLS key"]["found"]


def test_a_port_taken_by_another_process(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        code, checks, _ = doctor({**env, "FIELDLINE_HTTP_PORT": str(port)})

    assert code == 1
    assert checks["HTTP port"]["status"] == "problem"
    assert checks["HTTP port"]["found"].startswith(
        f"127.0.0.1:{port} is taken by pid {os.getpid()} "
    )
    assert "FIELDLINE_HTTP_PORT" in checks["HTTP port"]["fix"]


def test_placeholder_secrets_are_refused_with_what_to_set(env: dict[str, str]) -> None:
    code, checks, text = doctor({**env, "FIELDLINE_SECRET_KEY": "changeme"})

    assert code == 1
    assert checks["settings"]["status"] == "problem"
    assert "FIELDLINE_SECRET_KEY is a placeholder" in checks["settings"]["found"]
    assert list(checks) == ["settings"]  # nothing else can be checked without settings
    assert "1 problem: fix the problems above" in text


def test_beside_a_running_up_its_ports_database_and_broker_are_fieldline_own(
    env: dict[str, str], workdir: Path, mosquitto_installed: None
) -> None:
    from tests.e2e.conftest import start_platform, stop_platform

    settings = {**env, "FIELDLINE_BROKER": "mosquitto"}
    up = start_platform(
        "doctor",
        {"FIELDLINE_BROKER": "mosquitto"},
        Path(env["FIELDLINE_DATA_DIR"]),
        http_port=int(env["FIELDLINE_HTTP_PORT"]),
        mqtt_port=int(env["FIELDLINE_MQTT_PORT"]),
    )
    try:
        code, checks, text = doctor(settings)
    finally:
        assert stop_platform(up) == 0

    assert code == 0, text
    for port in ("HTTP port", "MQTT port"):
        assert checks[port]["status"] == "ok"
        assert " is fieldline's own (pid " in checks[port]["found"], text
    assert checks["database"]["found"] == (
        f"reachable: the embedded PostgreSQL of `fieldline up` (pid {up.process.pid})"
    )
    assert checks["migrations"]["status"] == "ok"
    assert checks["broker"]["status"] == "ok"
    assert "accepts MQTT at 127.0.0.1:" in checks["broker"]["found"]
