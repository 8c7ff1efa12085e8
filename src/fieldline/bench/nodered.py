"""Node-RED as the peer users build instead of fieldline: MQTT in, a function node, PostgreSQL.

The flow (benchmarks/nodered/flow.json) is the one the Node-RED community
writes for "MQTT telemetry into Postgres": an `mqtt in` node on
`devices/+/telemetry` at QoS 1 with a persistent session (so the broker queues
for it as it does for `fieldline ingest`), and a function node that runs one
parameterised INSERT per message through a `pg` pool. No batching: users don't
write one, and a function node that batched would be a second product.

Node-RED's MQTT client acknowledges a message as soon as it enters the flow,
before the INSERT: under overload the backlog waits in Node-RED's memory (the
pool's queue) rather than at the broker, and a crash loses it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import LiteralString

import gmqtt
import psycopg
from gmqtt.mqtt.constants import MQTTv311

from fieldline.bench.deployment import DeploymentError

START_TIMEOUT = 60.0
POOL_SIZE = 16
# One row per point, the shape of fieldline's `telemetry` plus the message id, so that
# both store the same rows and the same index entries. The index is the one a user adds
# to chart one device's metric; the peer keeps no ledger and drops no duplicates.
SCHEMA = """
CREATE TABLE IF NOT EXISTS nodered_readings (
    message_id text NOT NULL,
    device_id  text NOT NULL,
    time       timestamptz NOT NULL,
    metric     text NOT NULL,
    value      double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS nodered_readings_series_idx
    ON nodered_readings (device_id, metric, time);
"""
BROKER_NODE = "broker"  # the mqtt-broker config node's id in flow.json
CLIENT_ID = "fieldline-bench-nodered"  # flow.json's, fixed: a persistent session needs one
CONNECTED = f"Connected to broker: {CLIENT_ID}@"
CONNECT_FAILED = "Connection failed to broker"
FLOWS_STARTED = "[info] Started flows"
FLOW_ERROR = "[error]"


def project_directory() -> Path:
    """benchmarks/nodered of the checkout this module runs from, else of the working directory."""
    for root in (Path(__file__).resolve().parents[3], Path.cwd()):
        candidate = root / "benchmarks" / "nodered"
        if (candidate / "package.json").exists():
            return candidate
    raise DeploymentError(
        "benchmarks/nodered not found: run the Node-RED peer from a fieldline checkout"
    )


class NodeRedPeer:
    """One Node-RED process running the peer flow, its user directory in `directory`."""

    def __init__(
        self,
        directory: Path,
        *,
        mqtt_host: str,
        mqtt_port: int,
        username: str,
        password: str,
        database_url: str,
    ) -> None:
        self.directory = directory
        self.log = directory / "node-red.log"
        self._mqtt_host = mqtt_host
        self._mqtt_port = mqtt_port
        self._username = username
        self._password = password
        self._database_url = database_url
        self._project = project_directory()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def install(self) -> None:
        """`npm ci` unless node_modules already holds what package-lock.json pins."""
        for tool in ("node", "npm"):
            if shutil.which(tool) is None:
                raise DeploymentError(
                    f"{tool} not found: the Node-RED peer needs Node.js 18.5 or later and npm "
                    "(apt-get install nodejs npm)"
                )
        installed = self._project / "node_modules" / ".package-lock.json"
        locked = self._project / "package-lock.json"
        if installed.exists() and installed.stat().st_mtime >= locked.stat().st_mtime:
            return
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=self._project,
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise DeploymentError(f"npm ci in {self._project} failed:\n{done.stderr[-4000:]}")

    async def start(self) -> None:
        """Create the table, start Node-RED, return once its MQTT session is subscribed.

        Node-RED logs the broker connection and then, in the same event-loop turn,
        sends its SUBSCRIBE; Mosquitto handles a client's packets in order, so a
        device publishing after this returns reaches the subscription.
        """
        await asyncio.to_thread(self._create_table)
        self._write_user_directory()
        # The log is appended to across restarts: look only at what this start writes.
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        red = self._project / "node_modules" / "node-red" / "red.js"
        if not red.exists():
            raise DeploymentError(f"{red} missing: call install() first")
        node = shutil.which("node")
        if node is None:
            raise DeploymentError("node not found: the Node-RED peer needs Node.js 18.5 or later")
        env = {
            **os.environ,
            "MQTT_HOST": self._mqtt_host,
            "MQTT_PORT": str(self._mqtt_port),
            "DATABASE_URL": self._database_url,
            "PG_POOL_SIZE": str(POOL_SIZE),
        }
        with self.log.open("ab") as output:
            self._process = subprocess.Popen(
                [
                    node,
                    str(red),
                    "--userDir",
                    str(self.directory),
                    "--settings",
                    str(self._project / "settings.js"),
                ],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        await self._wait_subscribed()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise DeploymentError("Node-RED is not running")
        return self._process.pid

    async def stored_messages(self) -> int:
        """Distinct message ids stored: exact even if a redelivery was inserted twice.

        It scans and sorts the table (about 0.25 s per 100,000 messages here): poll
        `stored_points()` while the load runs and count messages once at the end.
        """
        return await asyncio.to_thread(
            self._count, "SELECT count(DISTINCT message_id) FROM nodered_readings"
        )

    async def stored_points(self) -> int:
        """Rows stored, one per metric: a tenth of `stored_messages()`'s cost."""
        return await asyncio.to_thread(self._count, "SELECT count(*) FROM nodered_readings")

    async def stop(self, *, end_session: bool = False) -> None:
        """SIGTERM: Node-RED closes its flows and disconnects.

        The broker keeps the persistent session and queues for it, so a restart resumes
        where it left off; `end_session` discards it, for a run that measures something
        else next on the same broker.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        if end_session:
            # MQTT 3.1.1 ends a session by connecting with its client id and a clean one.
            client = gmqtt.Client(CLIENT_ID, clean_session=True)
            client.set_auth_credentials(self._username, self._password)
            await client.connect(self._mqtt_host, self._mqtt_port, version=MQTTv311)
            await client.disconnect()

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def _create_table(self) -> None:
        with psycopg.connect(self._database_url, autocommit=True) as conn:
            conn.execute(SCHEMA)

    def _count(self, query: LiteralString) -> int:
        with psycopg.connect(self._database_url) as conn:
            row = conn.execute(query).fetchone()
        assert row is not None
        return int(row[0])

    def _write_user_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._project / "flow.json", self.directory / "flows.json")
        credentials = {BROKER_NODE: {"user": self._username, "password": self._password}}
        path = self.directory / "flows_cred.json"
        path.write_text(json.dumps(credentials))
        path.chmod(0o600)

    async def _wait_subscribed(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with self.log.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
            # A flow that fails to start (a function node's syntax, say) logs an error
            # and runs on without that node: it must not pass for a running peer.
            if FLOW_ERROR in text or CONNECT_FAILED in text or self._process.poll() is not None:
                await self.stop()
                raise DeploymentError(f"Node-RED did not start its flow:\n{self.tail()}")
            if CONNECTED in text and FLOWS_STARTED in text:
                return
            if time.monotonic() > deadline:
                await self.stop()
                raise DeploymentError(f"Node-RED not subscribed in time:\n{self.tail()}")
            await asyncio.sleep(0.1)
