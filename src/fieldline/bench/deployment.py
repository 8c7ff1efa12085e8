"""The production topology as real processes, built from the repository's deploy/.

Mosquitto runs deploy/mosquitto/fieldline.conf under a main file like Debian's, and
`fieldline api`, `fieldline ingest` (one or more) and `fieldline worker` run their
systemd units' commands (deploy/systemd/*.service) with the environment file
deploy/systemd/fieldline.env.example, each a subprocess with its own log. Only what
must differ on a test machine is substituted: paths, free ports on 127.0.0.1, the
test's database and secrets. A change in deploy/ changes what the benchmarks, the
fault-injection tests and the deployment tests run.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fieldline.broker.mosquitto import find_dynsec_plugin
from fieldline.ops.sockets import accepts_connections, free_port
from fieldline.security.passwords import generate_secret

ADMIN_PASSWORD = "deploy-admin-password"
SECRET_KEY = "k" * 16 + generate_secret(16)
START_TIMEOUT = 60.0
PLACEHOLDER = re.compile(r"<[^>]+>")
TLS_SETTINGS = (
    "FIELDLINE_MQTT_TLS_PORT",
    "FIELDLINE_MQTT_TLS_CA_FILE",
    "FIELDLINE_MQTT_TLS_CERT_FILE",
)
# Not production's: the test loads publish faster than one device may (20 messages/s).
TEST_LOAD_ENV = {"FIELDLINE_DEVICE_RATE_LIMIT": "0"}


def metric_total(text: str, metric: str) -> float:
    """The sum of a metric's samples in a Prometheus text exposition (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric) and not line.startswith("#"):
            head = line.split(" ", 1)[0]
            if head == metric or head.startswith(metric + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


class DeploymentError(RuntimeError):
    """A process of the deployment did not start, or answered unexpectedly."""


def deploy_directory() -> Path:
    """deploy/ of the source checkout this module runs from (src layout, editable install)."""
    deploy = Path(__file__).resolve().parents[3] / "deploy"
    if not deploy.is_dir():
        raise DeploymentError(
            f"{deploy} is missing: the deployment harness builds its topology from the "
            "repository's deploy/, so it runs from a source checkout of fieldline "
            "(`uv sync` there), not from an installed package"
        )
    return deploy


def environment_file(deploy: Path) -> dict[str, str]:
    """deploy/systemd/fieldline.env.example's settings, placeholders and all."""
    text = (deploy / "systemd" / "fieldline.env.example").read_text()
    pairs = (line.partition("=") for line in text.splitlines())
    return {key: value for key, _, value in pairs if key and not key.startswith("#")}


def unit_command(deploy: Path, unit: str) -> list[str]:
    """fieldline's arguments in a systemd unit's ExecStart (the program is this checkout's)."""
    for line in (deploy / "systemd" / unit).read_text().splitlines():
        if line.startswith("ExecStart="):
            program, *arguments = shlex.split(line.removeprefix("ExecStart="))
            if Path(program).name == "fieldline":
                return arguments
    raise DeploymentError(f"{deploy / 'systemd' / unit} has no ExecStart running fieldline")


def _substituted(line: str, values: dict[str, str]) -> str:
    directive = line.split(" ", 1)[0]
    return f"{directive} {values[directive]}" if directive in values else line


def _listeners(text: str) -> tuple[list[str], list[list[str]]]:
    """A Mosquitto file's lines before its first listener, and each listener's lines."""
    head: list[str] = []
    listeners: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("listener "):
            listeners.append([line])
        elif listeners:
            listeners[-1].append(line)
        else:
            head.append(line)
    return head, listeners


@dataclass
class MosquittoServer:
    """Mosquitto running deploy/mosquitto/fieldline.conf: dynamic security, persistence, queues.

    `mosquitto.conf` stands for Debian's main file (its persistence location is this
    directory) and includes `conf.d/fieldline.conf`: deploy's file with this machine's
    plugin path, this directory, free ports on 127.0.0.1 and, only when the test asks
    for TLS (`tls_port` and `tls_files`), the TLS listener with the test's files.
    """

    directory: Path
    port: int = 0
    tls_port: int | None = None
    tls_files: tuple[Path, Path, Path] | None = None  # ca, cert, key
    admin_username: str = "fieldline-admin"
    admin_password: str = field(default_factory=generate_secret)
    plaintext: bool = True  # False: the TLS listener only
    # More plaintext listeners: 127.0.0.1 has ~28k ephemeral ports per destination port.
    extra_ports: list[int] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        deployed = (deploy_directory() / "mosquitto" / "fieldline.conf").read_text()
        self.port = self.port or free_port("127.0.0.1")
        self.directory.mkdir(parents=True, exist_ok=True)
        dynsec = self.directory / "dynamic-security.json"
        if not dynsec.exists():
            subprocess.run(
                [
                    "mosquitto_ctrl",
                    "dynsec",
                    "init",
                    str(dynsec),
                    self.admin_username,
                    self.admin_password,
                ],
                check=True,
                capture_output=True,
            )
        if not self.plaintext:
            self.port = self.tls_port or 0
        (self.directory / "conf.d").mkdir(exist_ok=True)
        (self.directory / "conf.d" / "fieldline.conf").write_text(
            self._configuration(deployed, dynsec)
        )
        (self.directory / "mosquitto.conf").write_text(self._main_file())

    @property
    def tls(self) -> bool:
        return self.tls_port is not None and self.tls_files is not None

    def _configuration(self, deployed: str, dynsec: Path) -> str:
        plugin = find_dynsec_plugin()
        if plugin is None:
            raise DeploymentError("Mosquitto's dynamic-security plugin is not installed")
        head, listeners = _listeners(deployed)
        here = {"plugin": str(plugin), "plugin_opt_config_file": str(dynsec)}
        lines = [_substituted(line, here) for line in head]
        for listener in listeners:
            if any(line.startswith("certfile ") for line in listener):
                if self.tls_port is None or self.tls_files is None:
                    continue
                ca, cert, key = self.tls_files
                files = {"cafile": str(ca), "certfile": str(cert), "keyfile": str(key)}
                lines.append(f"listener {self.tls_port} 127.0.0.1")
                lines += [_substituted(line, files) for line in listener[1:]]
            elif self.plaintext:
                lines.append(f"listener {self.port} 127.0.0.1")
                lines += listener[1:]
                lines += [f"listener {port} 127.0.0.1" for port in self.extra_ports]
        return "\n".join(lines) + "\n"

    def _main_file(self) -> str:
        """What Debian's /etc/mosquitto/mosquitto.conf sets, for this directory (its pid
        file and log file left out: the harness keeps the log)."""
        lines = [
            "persistence true",
            f"persistence_location {self.directory}/",
            f"include_dir {self.directory}/conf.d",
        ]
        if os.geteuid() == 0:
            # Mosquitto started as root switches to the user `mosquitto`, who cannot
            # write in root's test directory.
            lines.insert(0, "user root")
        return "\n".join(lines) + "\n"

    async def start(self) -> None:
        log = (self.directory / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.directory / "mosquitto.conf")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 10
        while not await accepts_connections("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise DeploymentError((self.directory / "mosquitto.log").read_text())
            if time.monotonic() > deadline:
                raise DeploymentError("mosquitto did not start in 10 s")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence file (queued messages) and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@dataclass
class Component:
    """One fieldline process (`api`, `ingest` or `worker`) and its log."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    ready: str  # a line the process prints once it serves
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fieldline", *self.argv],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.ready not in self.log.read_text(errors="replace"):
            if self.process is None or self.process.poll() is not None:
                raise DeploymentError(f"{self.name} exited:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"{self.name} not ready in time:\n{self.tail()}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """kill -9: no drain, no goodbye; unacknowledged messages stay with the broker."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -9

    def rss_mib(self) -> float:
        if self.process is None:
            raise DeploymentError(f"{self.name} is not running")
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
        return kib / 1024

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    @property
    def ops_port(self) -> int:
        """Where /health, /ready and /metrics are served: `--ops-port`, else the setting."""
        if "--ops-port" in self.argv:
            return int(self.argv[self.argv.index("--ops-port") + 1])
        return int(self.env["FIELDLINE_OPS_PORT"])


@dataclass
class Deployment:
    """api + ingest processes + worker against `broker` and the database at `database_url`,
    each run as its systemd unit runs it, with the units' environment file."""

    directory: Path
    database_url: str
    broker: MosquittoServer
    extra_env: dict[str, str] = field(default_factory=dict)
    service_password: str = field(default_factory=generate_secret)
    api_port: int = field(default_factory=lambda: free_port("127.0.0.1"))
    components: dict[str, Component] = field(default_factory=dict)
    deploy: Path = field(init=False)

    def __post_init__(self) -> None:
        self.deploy = deploy_directory()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """Every process's environment: deploy's environment file with this machine's
        values, then the test's own settings (`extra_env`, then `extra`), which win."""
        deployed = environment_file(self.deploy)
        here = self._machine_settings()
        settings = {key: here.get(key, value) for key, value in deployed.items()}
        if not self.broker.tls:
            # The broker has no TLS listener (its configuration leaves deploy's out):
            # nothing to tell devices of, no certificates to watch.
            for key in TLS_SETTINGS:
                settings.pop(key, None)
        unfilled = sorted(key for key, value in settings.items() if PLACEHOLDER.search(value))
        if unfilled:
            raise DeploymentError(
                f"{self.deploy}/systemd/fieldline.env.example has placeholders the harness "
                f"does not fill: {unfilled}"
            )
        return {**os.environ, **settings, **TEST_LOAD_ENV, **self.extra_env, **extra}

    def _machine_settings(self) -> dict[str, str]:
        """The environment file's values that cannot be a test machine's."""
        here = {
            "DATABASE_URL": self.database_url,
            "FIELDLINE_DATA_DIR": str(self.directory / "data"),
            "FIELDLINE_SECRET_KEY": SECRET_KEY,
            "FIELDLINE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            # Names in the operator's DNS that reach nothing here: users reach this API,
            # and devices this broker, on 127.0.0.1 (firmware links are made from the URL).
            "FIELDLINE_PUBLIC_URL": self.api_url,
            "FIELDLINE_MQTT_PUBLIC_HOST": "127.0.0.1",
            "FIELDLINE_HTTP_PORT": str(self.api_port),
            "FIELDLINE_MQTT_PORT": str(self.broker.port),
            "FIELDLINE_BROKER_ADMIN_USERNAME": self.broker.admin_username,
            "FIELDLINE_BROKER_ADMIN_PASSWORD": self.broker.admin_password,
            "FIELDLINE_BROKER_SERVICE_PASSWORD": self.service_password,
        }
        if self.broker.tls_port is not None and self.broker.tls_files is not None:
            ca, cert, _ = self.broker.tls_files
            here |= {
                "FIELDLINE_MQTT_TLS_PORT": str(self.broker.tls_port),
                "FIELDLINE_MQTT_TLS_CA_FILE": str(ca),
                "FIELDLINE_MQTT_TLS_CERT_FILE": str(cert),
            }
        return here

    def _component(self, name: str, argv: list[str], ready: str, **env: str) -> Component:
        component = Component(
            name, argv, self.env(**env), self.directory / f"{name}.log", ready=ready
        )
        self.components[name] = component
        return component

    def _unit(
        self, name: str, unit: str, ready: str, instance: str, env: dict[str, str]
    ) -> Component:
        """A component running its unit's ExecStart, its ports this machine's."""
        argv = [argument.replace("%i", instance) for argument in unit_command(self.deploy, unit)]
        if "--ops-port" in argv:
            # 9100 and 910%i are for a machine of their own: a free port here, or the test's.
            port = env.get("FIELDLINE_OPS_PORT") or str(free_port("127.0.0.1"))
            argv[argv.index("--ops-port") + 1] = port
        return self._component(name, argv, ready, **env)

    def api(self, **env: str) -> Component:
        """`fieldline api` as deploy/systemd/fieldline-api.service runs it (not started)."""
        return self._unit("api", "fieldline-api.service", "fieldline api listening", "", env)

    def ingest(self, instance: str, **env: str) -> Component:
        """`fieldline ingest` as the instance `instance` of fieldline-ingest@.service."""
        ready = f"fieldline ingest {instance} connected"
        return self._unit(f"ingest-{instance}", "fieldline-ingest@.service", ready, instance, env)

    def worker(self, **env: str) -> Component:
        """`fieldline worker` as deploy/systemd/fieldline-worker.service runs it."""
        return self._unit("worker", "fieldline-worker.service", "fieldline worker running", "", env)

    async def start_api(self, **env: str) -> Component:
        api = self.api(**env)
        api.start()
        await api.wait_ready()
        return api

    async def start_ingest(self, instance: str, **env: str) -> Component:
        """Start an ingest instance; one started before starts again on its own ports."""
        ingest = self.components.get(f"ingest-{instance}") or self.ingest(instance, **env)
        ingest.start()
        await ingest.wait_ready()
        return ingest

    async def start_worker(self, **env: str) -> Component:
        worker = self.worker(**env)
        worker.start()
        await worker.wait_ready()
        return worker

    def ops_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.components[name].ops_port}"

    async def metric(self, name: str, metric: str) -> float:
        """The sum of a metric's samples on a component's /metrics (0 when absent)."""
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(self.ops_url(name) + "/metrics")).text
        return metric_total(text, metric)

    async def admin_headers(self) -> dict[str, str]:
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30) as http:
            token = await http.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
        if token.status_code != 200:
            raise DeploymentError(f"admin login failed: {token.text}")
        return {"Authorization": f"Bearer {token.json()['access_token']}"}

    async def register(self, device_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Register devices through the API; answer each one's MQTT credentials."""
        headers = await self.admin_headers()
        created: dict[str, dict[str, Any]] = {}
        async with httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=30) as http:
            for device_id in device_ids:
                answer = await http.post("/api/v1/devices", json={"device_id": device_id})
                if answer.status_code != 201:
                    raise DeploymentError(f"registering {device_id} failed: {answer.text}")
                created[device_id] = answer.json()["mqtt"]
        return created

    def stop_all(self) -> dict[str, int]:
        return {name: component.stop() for name, component in self.components.items()}
