"""fieldline watches itself without Prometheus: `fieldline api`, `ingest` and `worker` as
separate processes beat every second; stopping ingest raises the system alert "ingest
is down" on the notification channel and starting it again resolves it; with the worker
stopped, the API stands in for it and "worker is down" still reaches the channel. The
admin's `GET /api/v1/system` shows each process, the worker's jobs and what fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fieldline.bench.receiver import Delivery, WebhookReceiver
from tests.deployment import Deployment, MosquittoServer, running

pytestmark = [pytest.mark.usefixtures("mosquitto_installed"), pytest.mark.timeout(180)]

WAIT = 45.0  # down after 6 beats of 1 s, judged every beat: well within


async def wait_for(what: str, check: Callable[[], Awaitable[Any]], deployment: Deployment) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        answer = await check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {name}\n{component.tail(1500)}"
                for name, component in deployment.components.items()
            )
            pytest.fail(f"{what} not seen in {WAIT:g} s\n{logs}")
        await asyncio.sleep(0.25)


def system_events(receiver: WebhookReceiver, event: str, summary: str) -> list[Delivery]:
    return [
        d
        for d in receiver.deliveries
        if d.body.get("kind") == "system"
        and d.body.get("event") == event
        and summary in d.body.get("summary", "")
    ]


async def test_fieldline_raises_and_resolves_its_own_alerts(
    workdir: Path, pg15_database_url: str
) -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    broker = MosquittoServer(workdir / "mosquitto")
    await broker.start()
    deployment = Deployment(
        workdir, pg15_database_url, broker, extra_env={"FIELDLINE_HEARTBEAT_SECONDS": "1"}
    )
    try:
        with running(deployment):
            await deployment.start_api()
            ingest = await deployment.start_ingest("1")
            worker = await deployment.start_worker()
            headers = await deployment.admin_headers()
            async with httpx.AsyncClient(
                base_url=deployment.api_url, headers=headers, timeout=30
            ) as http:
                channel = await http.post(
                    "/api/v1/notification-channels",
                    json={
                        "name": "ops",
                        "type": "webhook",
                        "config": {"url": receiver.url, "secret": "f" * 32},
                    },
                )
                assert channel.status_code == 201, channel.text

                async def system() -> dict[str, Any]:
                    answer = await http.get("/api/v1/system")
                    assert answer.status_code == 200, answer.text
                    body: dict[str, Any] = answer.json()
                    return body

                async def all_alive() -> dict[str, Any] | None:
                    body = await system()
                    alive = {p["role"] for p in body["processes"] if p["alive"]}
                    jobs = {job["job"] for job in body["jobs"]}
                    return (
                        body if alive == {"api", "ingest", "worker"} and "health" in jobs else None
                    )

                healthy = await wait_for(
                    "three processes and the worker's jobs", all_alive, deployment
                )
                assert healthy["checks"] == []  # all running: nothing fails
                ingest_row = next(p for p in healthy["processes"] if p["role"] == "ingest")
                assert ingest_row["name"] == "ingest 1"
                assert ingest_row["ingest"]["broker_connected"] is True
                assert ingest_row["pool"] is None  # ingest has no pool, its writer a connection
                assert (
                    next(p for p in healthy["processes"] if p["role"] == "api")["pool"]["max"] == 10
                )
                job = next(j for j in healthy["jobs"] if j["job"] == "health")
                assert job["outcome"] == "done" and job["process"] == "worker"
                assert healthy["database"]["version"].startswith("PostgreSQL 15")

                # A viewer does not see fieldline's insides.
                viewer = await http.post(
                    "/api/v1/users",
                    json={"username": "vera", "password": "viewer-password-1", "role": "viewer"},
                )
                assert viewer.status_code == 201, viewer.text
                token = await http.post(
                    "/api/v1/auth/login",
                    json={"username": "vera", "password": "viewer-password-1"},
                )
                refused = await http.get(
                    "/api/v1/system",
                    headers={"Authorization": f"Bearer {token.json()['access_token']}"},
                )
                assert refused.status_code == 403, refused.text

                ingest.stop()
                (fired,) = await wait_for(
                    "'ingest is down' on the channel",
                    lambda: asyncio.sleep(0, system_events(receiver, "firing", "ingest is down")),
                    deployment,
                )
                assert fired.body["severity"] == "critical"
                assert "ingest 1" in fired.body["summary"], fired.body
                assert "stopped" in fired.body["summary"], fired.body
                down = await system()
                (check,) = [c for c in down["checks"] if c["key"] == "ingest_down"]
                assert check["alert_id"] == fired.body["alert_id"]
                stopped = [p for p in down["processes"] if p["role"] == "ingest"]
                assert stopped and not stopped[0]["alive"] and stopped[0]["stopped_at"]
                alerts = await http.get("/api/v1/alerts", params={"state": "active"})
                assert [(a["kind"], a["id"]) for a in alerts.json()["items"]] == [
                    ("system", fired.body["alert_id"])
                ]

                await deployment.start_ingest("1")
                (resolved,) = await wait_for(
                    "'ingest is down' resolved on the channel",
                    lambda: asyncio.sleep(0, system_events(receiver, "resolved", "ingest is down")),
                    deployment,
                )
                assert resolved.body["alert_id"] == fired.body["alert_id"]

                worker.stop()  # the API stands in: judges, and delivers
                (worker_down,) = await wait_for(
                    "'worker is down' on the channel",
                    lambda: asyncio.sleep(0, system_events(receiver, "firing", "worker is down")),
                    deployment,
                )
                assert "worker" in worker_down.body["summary"]
                assert "no worker is running" in deployment.components["api"].tail(20_000)
    finally:
        await receiver.stop()
