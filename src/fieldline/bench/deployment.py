"""The production topology as real processes, started as docs/deploy.md tells an operator.

A Mosquitto fieldline does not run (dynamic security, persistence, queues, optional
TLS), `fieldline api`, `fieldline ingest` (one or more) and `fieldline worker`, each a
subprocess with its own log. Used by the benchmarks, the fault-injection tests and
the deployment end-to-end test.
"""

from __future__ import annotations

import asyncio
import os
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


@dataclass
class MosquittoServer:
    """A Mosquitto configured as docs/deploy.md says: dynamic security, persistence, queues."""

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
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            "user root",
            f"plugin {find_dynsec_plugin()}",
            f"plugin_opt_config_file {dynsec}",
            "persistence true",
            f"persistence_location {self.directory}/",
            "autosave_interval 10",
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
        ]
        if self.plaintext:
            lines.append(f"listener {self.port} 127.0.0.1")
            lines += [f"listener {port} 127.0.0.1" for port in self.extra_ports]
        else:
            self.port = self.tls_port or 0
        if self.tls_port is not None and self.tls_files is not None:
            ca, cert, key = self.tls_files
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {ca}",
                f"certfile {cert}",
                f"keyfile {key}",
                "tls_version tlsv1.2",
            ]
        (self.directory / "mosquitto.conf").write_text("\n".join(lines) + "\n")

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


@dataclass
class Deployment:
    """api + ingest processes + worker against `broker` and the database at `database_url`."""

    directory: Path
    database_url: str
    broker: MosquittoServer
    extra_env: dict[str, str] = field(default_factory=dict)
    service_password: str = field(default_factory=generate_secret)
    api_port: int = field(default_factory=lambda: free_port("127.0.0.1"))
    components: dict[str, Component] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "FIELDLINE_DATA_DIR": str(self.directory / "data"),
            "FIELDLINE_BROKER": "external",
            "FIELDLINE_MQTT_HOST": "127.0.0.1",
            "FIELDLINE_MQTT_PORT": str(self.broker.port),
            "FIELDLINE_BROKER_SERVICE_USERNAME": "fieldline-ingest",
            "FIELDLINE_BROKER_SERVICE_PASSWORD": self.service_password,
            "FIELDLINE_SECRET_KEY": SECRET_KEY,
            "FIELDLINE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "FIELDLINE_LOG_FORMAT": "json",
            "FIELDLINE_DEVICE_RATE_LIMIT": "0",
            **self.extra_env,
            **extra,
        }

    def _component(self, name: str, argv: list[str], ready: str, **env: str) -> Component:
        component = Component(
            name, argv, self.env(**env), self.directory / f"{name}.log", ready=ready
        )
        self.components[name] = component
        return component

    async def start_api(self) -> Component:
        api = self._component(
            "api",
            ["api"],
            "fieldline api listening",
            FIELDLINE_HTTP_PORT=str(self.api_port),
            FIELDLINE_BROKER_ADMIN_USERNAME=self.broker.admin_username,
            FIELDLINE_BROKER_ADMIN_PASSWORD=self.broker.admin_password,
        )
        api.start()
        await api.wait_ready()
        return api

    async def start_ingest(self, instance: str, **env: str) -> Component:
        name = f"ingest-{instance}"
        ingest = self.components.get(name) or self._component(
            name,
            ["ingest"],
            f"fieldline ingest {instance} connected",
            FIELDLINE_INGEST_INSTANCE=instance,
            FIELDLINE_OPS_PORT=str(free_port("127.0.0.1")),
            **env,
        )
        ingest.start()
        await ingest.wait_ready()
        return ingest

    async def start_worker(self, **env: str) -> Component:
        worker = self._component("worker", ["worker"], "fieldline worker running", **env)
        worker.start()
        await worker.wait_ready()
        return worker

    def ops_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.components[name].env['FIELDLINE_OPS_PORT']}"

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
