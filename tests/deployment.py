"""The production topology as real processes: a Mosquitto fieldline does not run,
`fieldline api`, `fieldline ingest` (one or more) and `fieldline worker`, and a
load of devices that records exactly which messages the broker acknowledged.

Used by the fault-injection tests and the deployment end-to-end test; every
process runs from deploy/'s files (fieldline.bench.deployment).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gmqtt
import psycopg
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage

from fieldline.bench.deployment import (
    ADMIN_PASSWORD,
    Component,
    Deployment,
    DeploymentError,
    MosquittoServer,
)

__all__ = ["ADMIN_PASSWORD", "Component", "Deployment", "MosquittoServer"]


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
        self,
        credentials: dict[str, dict[str, Any]],
        port: int,
        *,
        rate_per_device: float,
        mqtt5: bool = True,
    ) -> None:
        self._credentials = credentials
        self._port = port
        self._interval = 1.0 / rate_per_device
        self._mqtt5 = mqtt5  # False: MQTT 3.1.1 (amqtt), where a session has no expiry
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
                device_id,  # its client id: the broker refuses any other
                clean_session=False,
                persistent_storage=recorder,
                **({"session_expiry_interval": 3600} if self._mqtt5 else {}),
            )
            client.set_auth_credentials(device_id, mqtt["password"])
            client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
            version = MQTTv50 if self._mqtt5 else MQTTv311
            await client.connect("127.0.0.1", self._port, version=version, keepalive=10)
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
            with contextlib.suppress(OSError, StopIteration, DeploymentError):
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
