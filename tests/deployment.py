"""The production topology as real processes: a Mosquitto fieldline does not run,
`fieldline api`, `fieldline ingest` (one or more) and `fieldline worker`, and a
load of devices that records exactly which messages the broker acknowledged.

Used by the fault-injection tests and the deployment end-to-end test; every
process is started the way docs/deploy.md tells an operator to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gmqtt
import httpx
import psycopg
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.storage import PersistentStorage

from fieldline.broker.mosquitto import find_dynsec_plugin
from fieldline.ops.sockets import accepts_connections, free_port
from fieldline.security.passwords import generate_secret

ADMIN_PASSWORD = "deploy-admin-password"
SECRET_KEY = "k" * 16 + generate_secret(16)
START_TIMEOUT = 60.0


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
            assert self.process.poll() is None, (self.directory / "mosquitto.log").read_text()
            assert time.monotonic() < deadline, "mosquitto did not start"
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence file (queued messages) and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
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
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready in time:\n{self.tail()}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        """kill -9: no drain, no goodbye; unacknowledged messages stay with the broker."""
        assert self.process is not None
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
        assert self.process is not None
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
        total = 0.0
        for line in text.splitlines():
            if line.startswith(metric) and not line.startswith("#"):
                head = line.split(" ", 1)[0]
                if head == metric or head.startswith(metric + "{"):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    async def admin_headers(self) -> dict[str, str]:
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30) as http:
            token = await http.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
        assert token.status_code == 200, token.text
        return {"Authorization": f"Bearer {token.json()['access_token']}"}

    async def register(self, device_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Register devices through the API; answer each one's MQTT credentials."""
        headers = await self.admin_headers()
        created: dict[str, dict[str, Any]] = {}
        async with httpx.AsyncClient(base_url=self.api_url, headers=headers, timeout=30) as http:
            for device_id in device_ids:
                answer = await http.post("/api/v1/devices", json={"device_id": device_id})
                assert answer.status_code == 201, answer.text
                created[device_id] = answer.json()["mqtt"]
        return created

    def stop_all(self) -> dict[str, int]:
        return {name: component.stop() for name, component in self.components.items()}


class _AckRecorder(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacknowledged publishes, noting which message ids were acknowledged."""

    def __init__(self, acked: set[str]) -> None:
        super().__init__()
        self.acked = acked
        self.next_message_id = ""
        self.by_mid: dict[int, str] = {}

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        if self.next_message_id:  # a resend after reconnect pushes the same mid again
            self.by_mid[mid] = self.next_message_id
            self.next_message_id = ""

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        message_id = self.by_mid.pop(mid, None)
        if message_id is not None:
            self.acked.add(message_id)


@dataclass
class LoadReport:
    published: int
    acknowledged: set[str]
    unacknowledged: int


class DeviceLoad:
    """Devices publishing telemetry at a steady rate with unique message ids (QoS 1).

    A message counts as acknowledged when the broker's PUBACK for it arrives;
    gmqtt resends what was unacknowledged after a reconnect, so a broker
    restart delays acknowledgements rather than losing messages.
    """

    METRICS_PER_MESSAGE = 2

    def __init__(
        self, credentials: dict[str, dict[str, Any]], port: int, *, rate_per_device: float
    ) -> None:
        self._credentials = credentials
        self._port = port
        self._interval = 1.0 / rate_per_device
        self.acked: set[str] = set()
        self.published = 0
        self._clients: dict[str, tuple[gmqtt.Client, _AckRecorder]] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        for device_id, mqtt in self._credentials.items():
            recorder = _AckRecorder(self.acked)
            # A persistent session, as QoS 1 firmware should keep: after a broker restart
            # the session is still there and gmqtt resends what was not acknowledged.
            client = gmqtt.Client(
                f"{device_id}-load",
                clean_session=False,
                session_expiry_interval=3600,
                persistent_storage=recorder,
            )
            client.set_auth_credentials(device_id, mqtt["password"])
            client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
            await client.connect("127.0.0.1", self._port, version=MQTTv50, keepalive=10)
            self._clients[device_id] = (client, recorder)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._publish(device_id, client, recorder))
            for device_id, (client, recorder) in self._clients.items()
        ]

    async def _publish(self, device_id: str, client: gmqtt.Client, recorder: _AckRecorder) -> None:
        seq = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            if client.is_connected:
                seq += 1
                message_id = f"{device_id}-{seq}"
                payload = json.dumps(
                    {
                        "message_id": message_id,
                        "timestamp": int(time.time() * 1000),
                        "sensors": {"seq": seq, "temperature": 20 + seq % 10},
                    }
                )
                recorder.next_message_id = message_id
                client.publish(f"devices/{device_id}/telemetry", payload, qos=1)
                self.published += 1
            next_at += self._interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def stop(self, *, settle: float = 60.0) -> LoadReport:
        """Stop publishing; wait (up to `settle` s) for every outstanding acknowledgement."""
        self._stop.set()
        await asyncio.gather(*self._tasks)
        deadline = time.monotonic() + settle
        while any(not r.is_empty for _, r in self._clients.values()):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        unacknowledged = sum(len(r.by_mid) for _, r in self._clients.values())
        for client, _ in self._clients.values():
            with contextlib.suppress(Exception):
                await client.disconnect()
        return LoadReport(self.published, set(self.acked), unacknowledged)


@dataclass
class Stored:
    message_ids: set[str]
    readings: int
    points: int
    duplicated_points: int  # readings stored more than once


def stored(database_url: str) -> Stored:
    with psycopg.connect(database_url) as conn:
        ids = {row[0] for row in conn.execute("SELECT message_id FROM message_ledger")}
        points = conn.execute("SELECT count(*) FROM telemetry").fetchone()
        # `seq` numbers a device's messages, so a (device, seq) stored twice is a duplicate.
        duplicated = conn.execute(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM telemetry "
            "WHERE metric = 'seq' GROUP BY device_id, value HAVING count(*) > 1) AS d"
        ).fetchone()
    assert points is not None and duplicated is not None
    return Stored(ids, len(ids), int(points[0]), int(duplicated[0]))


async def wait_stored(database_url: str, expected: set[str], *, timeout: float = 90.0) -> Stored:
    """Poll until every expected message id is stored (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(stored, database_url)
        if expected <= result.message_ids or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.5)


class RssSampler:
    """Peak resident memory of a process, sampled in the background."""

    def __init__(self, component: Component, every: float = 0.25) -> None:
        self._component = component
        self._every = every
        self.peak_mib = 0.0
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(OSError, StopIteration, AssertionError):
                self.peak_mib = max(self.peak_mib, self._component.rss_mib())
            await asyncio.sleep(self._every)


def report_line(test: str, load: LoadReport, result: Stored, **extra: object) -> str:
    lost = len(load.acknowledged - result.message_ids)
    details = "".join(f", {key} {value}" for key, value in extra.items())
    return (
        f"{test}: published {load.published}, acknowledged {len(load.acknowledged)}, "
        f"stored {len(result.message_ids & load.acknowledged)} of them "
        f"({result.readings} readings, {result.points} points), lost {lost}, "
        f"duplicated {result.duplicated_points}{details}"
    )


@contextlib.contextmanager
def running(deployment: Deployment) -> Iterator[Deployment]:
    try:
        yield deployment
    finally:
        deployment.stop_all()
        if deployment.broker.process is not None:
            deployment.broker.stop()
