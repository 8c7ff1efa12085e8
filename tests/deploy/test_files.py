"""Every file in deploy/ is checked by the tool that owns its format, where this machine
has it, and its settings are fieldline's own.

These machines have the Docker CLI without a daemon and without the compose plugin:
`docker compose config` runs where the plugin is present, Debian's standalone
`docker-compose config` (same file format, no daemon needed) where that is, and the
structural check below always. The image itself is not built here (no daemon)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fieldline.bench import deployment as deployment_module
from fieldline.bench.deployment import (
    ADMIN_PASSWORD,
    SECRET_KEY,
    TLS_SETTINGS,
    Deployment,
    DeploymentError,
    MosquittoServer,
)
from fieldline.broker.mosquitto import find_dynsec_plugin
from fieldline.config import Settings, load_settings
from fieldline.ops.sockets import free_port
from tests.deploy.conftest import DEPLOY

COMPOSE = DEPLOY / "compose.yaml"
SECRETS = {
    "POSTGRES_PASSWORD": "p0stgres0password0for0tests",
    "FIELDLINE_SECRET_KEY": "s" * 48,
    "FIELDLINE_ADMIN_PASSWORD": "admin0password0for0tests",
    "FIELDLINE_DOMAIN": "fieldline.example.com",
    "FIELDLINE_MQTT_PUBLIC_HOST": "mqtt.example.com",
    "BROKER_ADMIN_PASSWORD": "broker0admin0password",
    "BROKER_SERVICE_PASSWORD": "broker0service0password",
}
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]+\}")
ANY_VARIABLE = re.compile(r"\$\{(\w+)([^}]*)\}")


def _compose_tool() -> list[str] | None:
    """The compose CLI on this machine: Docker's plugin, else Debian's docker-compose."""
    if shutil.which("docker"):
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if plugin.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _without_secrets() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in SECRETS}


@pytest.mark.skipif(_compose_tool() is None, reason="no compose CLI here (plugin or Debian's)")
def test_compose_config_is_valid_and_refuses_missing_secrets(tmp_path: Path) -> None:
    tool = _compose_tool()
    assert tool is not None
    run = [*tool, "--project-directory", str(DEPLOY), "-f", str(COMPOSE), "config"]
    # A stray deploy/.env must not supply the values.
    env = {**_without_secrets(), **SECRETS, "COMPOSE_PROJECT_NAME": "fieldline-test"}
    valid = subprocess.run(run, env=env, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert valid.returncode == 0, valid.stderr
    resolved = yaml.safe_load(valid.stdout)
    api = resolved["services"]["api"]["environment"]
    assert api["FIELDLINE_SECRET_KEY"] == SECRETS["FIELDLINE_SECRET_KEY"]
    assert SECRETS["POSTGRES_PASSWORD"] in api["DATABASE_URL"]

    for missing in SECRETS:
        env = {**_without_secrets(), **SECRETS, "COMPOSE_PROJECT_NAME": "fieldline-test"}
        del env[missing]
        refused = subprocess.run(
            run, env=env, capture_output=True, text=True, check=False, cwd=tmp_path
        )
        assert refused.returncode != 0, missing
        assert f"set {missing}" in refused.stderr, refused.stderr


def test_compose_structure() -> None:
    """Runs everywhere, the compose CLI or not: every reference resolves, every secret
    is required, and the topology is the one docs/deploy.md describes."""
    text = COMPOSE.read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    services: dict[str, Any] = document["services"]
    volumes = set(document["volumes"])
    assert {"db", "mosquitto", "api", "ingest-1", "ingest-2", "worker", "caddy"} <= set(services)
    assert "timescale/timescaledb" in services["db"]["image"]
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert services["caddy"]["image"].startswith("caddy:2")

    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
            else:
                assert source in volumes, (name, source)
        for secret in service.get("secrets", []):
            assert secret in document.get("secrets", {}), (name, secret)
    # What must survive a `docker compose down`: each held by a named volume.
    mounted = {
        (name, mount.split(":")[1])
        for name, service in services.items()
        for mount in service.get("volumes", [])
    }
    for survivor in [
        ("db", "/var/lib/postgresql/data"),
        ("mosquitto", "/mosquitto/data"),
        ("api", "/var/lib/fieldline"),
        ("worker", "/var/lib/fieldline"),
        ("caddy", "/data"),
    ]:
        assert survivor in mounted, survivor

    # Every variable is either required (`${VAR:?message}`) or escaped for the shell ($$).
    for variable, rest in ANY_VARIABLE.findall(text.replace("$$", "")):
        assert rest.startswith(":?"), f"${{{variable}{rest}}} has a default or none required"
    assert set(REQUIRED.findall(text)) == set(SECRETS)
    documented = {
        line.split("=", 1)[0]
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert documented == set(SECRETS)

    # Two ingest instances with their own names, sharing the uplinks.
    commands = [services[name]["command"] for name in ("ingest-1", "ingest-2")]
    names = [command[command.index("--instance") + 1] for command in commands]
    assert len(set(names)) == 2, names
    assert services["api"]["environment"]["FIELDLINE_INGEST_SHARE_GROUP"]
    # fieldline trusts exactly Caddy's address.
    caddy_address = services["caddy"]["networks"]["default"]["ipv4_address"]
    assert services["api"]["environment"]["FIELDLINE_TRUSTED_PROXIES"] == caddy_address


def _fieldline_settings_in(text: str) -> set[str]:
    return set(re.findall(r"\b(FIELDLINE_[A-Z0-9_]+|DATABASE_URL)\b", text))


def _known_settings() -> set[str]:
    known = {"FIELDLINE_CONFIG"}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        known.add(alias if isinstance(alias, str) else f"FIELDLINE_{name.upper()}")
    return known


@pytest.mark.parametrize(
    "path",
    [
        "compose.yaml",
        "Dockerfile",
        "systemd/fieldline.env.example",
        "systemd/fieldline-api.service",
        "systemd/fieldline-ingest@.service",
        "systemd/fieldline-worker.service",
    ],
)
def test_settings_are_fieldlines(path: str) -> None:
    used = _fieldline_settings_in((DEPLOY / path).read_text())
    # Caddy's own placeholders (deploy/Caddyfile), not fieldline settings.
    used -= {"FIELDLINE_DOMAIN", "FIELDLINE_UPSTREAM"}
    unknown = used - _known_settings()
    assert not unknown, f"{path} sets what fieldline does not read: {sorted(unknown)}"


def test_the_environment_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/systemd/fieldline.env.example, its placeholders filled, is a valid Settings."""
    for line in (DEPLOY / "systemd" / "fieldline.env.example").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.split("=", 1)
        monkeypatch.setenv(key, re.sub(r"<[^>]+>", "filled0in0value0for0the0test0abcdefgh", value))
    settings = load_settings()
    assert settings.broker == "external"
    assert settings.trusted_proxies == "127.0.0.1"


def test_systemd_units_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` on copies whose ExecStart is this test's own fieldline
    (it checks that the executable exists; /opt/fieldline is not installed here)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (Debian's systemd package)")
    fieldline = Path(sys.prefix) / "bin" / "fieldline"
    assert fieldline.exists(), fieldline
    units = sorted((DEPLOY / "systemd").glob("fieldline-*.service"))
    assert {unit.name for unit in units} == {
        "fieldline-api.service",
        "fieldline-ingest@.service",
        "fieldline-worker.service",
    }
    for unit in units:
        text = unit.read_text()
        assert "ExecStart=/opt/fieldline/bin/fieldline " in text, unit.name
        for hardening in (
            "User=fieldline",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/fieldline",
            "Restart=on-failure",
            "RestartSec=",
            "StartLimitBurst=",
            "EnvironmentFile=/etc/fieldline/fieldline.env",
        ):
            assert hardening in text, (unit.name, hardening)
        assert "--ops-port" in text or unit.name == "fieldline-api.service", unit.name
        (tmp_path / unit.name).write_text(
            text.replace("/opt/fieldline/bin/fieldline", str(fieldline))
        )
    checked = [
        str(tmp_path / "fieldline-api.service"),
        str(tmp_path / "fieldline-worker.service"),
        str(tmp_path / "fieldline-ingest@1.service"),  # an instance of the template
    ]
    result = subprocess.run(
        [analyze, "verify", "--man=no", *checked], capture_output=True, text=True, check=False
    )
    # verify exits 0 on keys it ignores (it only warns): a clean unit says nothing.
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_systemd_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: verify names a missing executable and an unknown value."""
    unit = (DEPLOY / "systemd" / "fieldline-ingest@.service").read_text()
    (tmp_path / "fieldline-ingest@.service").write_text(
        unit.replace("Restart=on-failure", "Restart=sometimes")
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "fieldline-ingest@1.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "/opt/fieldline/bin/fieldline is not executable" in result.stderr
    assert "sometimes" in result.stderr


def test_caddyfile_validates(caddy: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "FIELDLINE_DOMAIN": "fieldline.example.com",
    }
    config = str(DEPLOY / "Caddyfile")
    result = subprocess.run(
        [caddy, "validate", "--adapter", "caddyfile", "--config", config],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr
    formatted = subprocess.run(
        [caddy, "fmt", config], env=env, capture_output=True, text=True, check=True
    )
    assert formatted.stdout == Path(config).read_text(), "run `caddy fmt --overwrite`"


def test_dockerfile() -> None:
    """No daemon here to build it (`docker build` needs one): what the image promises,
    read from the file, and every path it copies exists and passes its .dockerignore."""
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) == 2, stages
    assert "ARG PYTHON_IMAGE=python:3.12-slim" in text
    assert "uv sync --frozen --no-dev" in text
    assert re.search(r"^USER fieldline$", text, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", text, re.MULTILINE)
    assert 'ENTRYPOINT ["fieldline"]' in text
    root = DEPLOY.parent
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignored if line.startswith("!")}
    for line in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for source in line.split():
            assert (root / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded by the .dockerignore"


def _tested_broker(directory: Path, *, tls: bool) -> MosquittoServer:
    """The harness's Mosquitto, configured (not started), TLS files named but not made."""
    files = (directory / "ca.crt", directory / "server.crt", directory / "server.key")
    return MosquittoServer(
        directory / "mosquitto",
        extra_ports=[free_port("127.0.0.1")],
        tls_port=free_port("127.0.0.1") if tls else None,
        tls_files=files if tls else None,
    )


def _configuration_here(broker: MosquittoServer) -> dict[str, list[str]]:
    """deploy/mosquitto/fieldline.conf's lines a test machine changes, and what it runs
    instead: the TLS listener's lines are left out unless the test asked for TLS."""
    here = {
        "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so": [
            f"plugin {find_dynsec_plugin()}"
        ],
        "plugin_opt_config_file /var/lib/mosquitto/dynamic-security.json": [
            f"plugin_opt_config_file {broker.directory / 'dynamic-security.json'}"
        ],
        "listener 1883 127.0.0.1": [
            f"listener {port} 127.0.0.1" for port in [broker.port, *broker.extra_ports]
        ],
    }
    tls_listener = [
        "listener 8883",
        "cafile /etc/fieldline/certs/ca.crt",
        "certfile /etc/fieldline/certs/server.crt",
        "keyfile /etc/fieldline/certs/server.key",
        "tls_version tlsv1.2",
    ]
    if broker.tls_files is None:
        return here | {line: [] for line in tls_listener}
    ca, cert, key = broker.tls_files
    return here | {
        "listener 8883": [f"listener {broker.tls_port} 127.0.0.1"],
        "cafile /etc/fieldline/certs/ca.crt": [f"cafile {ca}"],
        "certfile /etc/fieldline/certs/server.crt": [f"certfile {cert}"],
        "keyfile /etc/fieldline/certs/server.key": [f"keyfile {key}"],
    }


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_the_tested_broker_runs_deploys_configuration(tmp_path: Path, tls: bool) -> None:
    """The harness's Mosquitto (the fault, deployment and monitoring tests', the benchmarks')
    runs deploy/mosquitto/fieldline.conf line for line but for what a test machine changes,
    under a main file that sets what Debian's sets."""
    broker = _tested_broker(tmp_path, tls=tls)
    deployed = (DEPLOY / "mosquitto" / "fieldline.conf").read_text().splitlines()
    here = _configuration_here(broker)
    assert set(here) <= set(deployed), "deploy's file changed: say what a test machine changes"
    tested = (broker.directory / "conf.d" / "fieldline.conf").read_text().splitlines()
    assert tested == [new for line in deployed for new in here.get(line, [line])]
    main = (broker.directory / "mosquitto.conf").read_text().splitlines()
    assert main[-3:] == [
        "persistence true",
        f"persistence_location {broker.directory}/",
        f"include_dir {broker.directory}/conf.d",
    ]
    # Debian's main file already sets it: a second one stops Mosquitto.
    assert not any(line.startswith("persistence_location") for line in deployed)


def _environment_file() -> dict[str, str]:
    text = (DEPLOY / "systemd" / "fieldline.env.example").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def _environment_here(deployment: Deployment) -> dict[str, str | None]:
    """The environment file's values a test machine changes (None: left out)."""
    broker = deployment.broker
    here: dict[str, str | None] = {
        "DATABASE_URL": deployment.database_url,
        "FIELDLINE_DATA_DIR": str(deployment.directory / "data"),
        "FIELDLINE_SECRET_KEY": SECRET_KEY,
        "FIELDLINE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "FIELDLINE_PUBLIC_URL": deployment.api_url,
        "FIELDLINE_HTTP_PORT": str(deployment.api_port),
        "FIELDLINE_MQTT_PORT": str(broker.port),
        "FIELDLINE_MQTT_PUBLIC_HOST": "127.0.0.1",
        "FIELDLINE_BROKER_ADMIN_PASSWORD": broker.admin_password,
        "FIELDLINE_BROKER_SERVICE_PASSWORD": deployment.service_password,
    }
    if broker.tls_files is None:
        return here | dict.fromkeys(TLS_SETTINGS)
    ca, cert, _ = broker.tls_files
    return here | {
        "FIELDLINE_MQTT_TLS_PORT": str(broker.tls_port),
        "FIELDLINE_MQTT_TLS_CA_FILE": str(ca),
        "FIELDLINE_MQTT_TLS_CERT_FILE": str(cert),
    }


def _exec_start(unit: str) -> list[str]:
    text = (DEPLOY / "systemd" / unit).read_text()
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return line.removeprefix("ExecStart=/opt/fieldline/bin/fieldline ").split()


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_the_tested_processes_run_deploys_units_and_environment(tmp_path: Path, tls: bool) -> None:
    """The harness's api, ingest and worker run their systemd units' commands with
    deploy/systemd/fieldline.env.example but for what a test machine changes; a test's
    own settings win over both."""
    url = "postgresql://fieldline:database0password@127.0.0.1:5999/fieldline"
    deployment = Deployment(tmp_path, url, _tested_broker(tmp_path, tls=tls))
    deployed = _environment_file()
    here = _environment_here(deployment)
    assert set(here) <= set(deployed), "deploy's file changed: say what a test machine changes"
    env = deployment.env()
    assert {key: env.get(key) for key in deployed} == {
        key: here.get(key, value) for key, value in deployed.items()
    }
    # The one addition: the test loads publish faster than a device may in production.
    assert set(env) - set(deployed) - set(os.environ) == {"FIELDLINE_DEVICE_RATE_LIMIT"}

    api, ingest = deployment.api(), deployment.ingest("2")
    assert api.argv == _exec_start("fieldline-api.service")
    assert ingest.argv == [
        argument.replace("%i", "2").replace("9102", str(ingest.ops_port))
        for argument in _exec_start("fieldline-ingest@.service")
    ]
    assert api.env == ingest.env == env  # one environment file for every process

    # The test's own settings win: the deployment's, then a component's.
    deployment.extra_env = {"FIELDLINE_INGEST_SHARE_GROUP": "", "FIELDLINE_LOG_FORMAT": "console"}
    worker = deployment.worker(FIELDLINE_OPS_PORT="19100", FIELDLINE_LOG_FORMAT="json")
    assert worker.argv == [
        argument.replace("9100", "19100") for argument in _exec_start("fieldline-worker.service")
    ]
    assert worker.env["FIELDLINE_INGEST_SHARE_GROUP"] == ""
    assert worker.env["FIELDLINE_LOG_FORMAT"] == "json"


def test_the_harness_says_it_needs_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed package has no deploy/ beside it: the harness says so."""
    installed = tmp_path / "lib/python3.12/site-packages/fieldline/bench/deployment.py"
    monkeypatch.setattr(deployment_module, "__file__", str(installed))
    with pytest.raises(DeploymentError, match="source checkout"):
        MosquittoServer(tmp_path / "mosquitto")
