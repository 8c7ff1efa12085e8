"""`fieldline api|ingest|worker` started wrongly or too early: a clear word, no traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fieldline.ops.sockets import free_port
from tests.deployment import Component, Deployment, MosquittoServer, running


def fieldline(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLINE_")}
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "fieldline", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("component", ["api", "ingest", "worker"])
def test_a_component_needs_an_external_database(component: str) -> None:
    ran = fieldline(component)
    assert ran.returncode == 1
    assert "set DATABASE_URL" in ran.stderr
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize("component", ["api", "ingest"])
def test_a_component_needs_a_broker_it_does_not_start(component: str) -> None:
    ran = fieldline(component, DATABASE_URL="postgresql://fieldline@127.0.0.1/fieldline")
    assert ran.returncode == 1
    assert "FIELDLINE_BROKER=external" in ran.stderr


async def test_a_worker_started_before_its_database_waits_for_it(tmp_path: Path) -> None:
    nothing_there = free_port("127.0.0.1")
    worker = Component(
        "worker",
        ["worker"],
        {
            **os.environ,
            "DATABASE_URL": f"postgresql://fieldline:pw@127.0.0.1:{nothing_there}/fieldline",
            "FIELDLINE_LOG_FORMAT": "json",
        },
        tmp_path / "worker.log",
        ready="database unreachable; retrying",
    )
    worker.start()
    await worker.wait_ready(timeout=30)
    await asyncio.sleep(1)
    assert worker.process is not None and worker.process.poll() is None  # still waiting
    assert worker.stop() == 0  # SIGTERM ends the wait cleanly (not the kill after 30 s)
    assert "Traceback" not in worker.tail()


@pytest.mark.usefixtures("mosquitto_installed")
async def test_an_api_started_before_its_broker_waits_for_it(
    workdir: Path, pg15_database_url: str
) -> None:
    broker = MosquittoServer(workdir / "mosquitto")  # configured, not started yet
    deployment = Deployment(workdir, pg15_database_url, broker)
    with running(deployment):
        starting = asyncio.create_task(deployment.start_api())
        api = deployment.components
        while "api" not in api or "broker not ready; retrying" not in api["api"].tail():
            assert not starting.done(), starting
            await asyncio.sleep(0.2)
        await broker.start()
        await asyncio.wait_for(starting, timeout=60)
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(deployment.api_url + "/ready")).status_code == 200
