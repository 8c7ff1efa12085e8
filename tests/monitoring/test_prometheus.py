"""A real Prometheus (Debian's package) scrapes a running `fieldline api`, `ingest` and
`worker` with deploy/prometheus's configuration and rules, and a shipped rule fires when
ingest stops.

The test's copy of prometheus.yml differs only in its targets and in scraping and
evaluating every second; its copy of the rules only in FieldlineIngestDown's `for`."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fieldline.ops.sockets import free_port
from tests.deployment import Deployment, MosquittoServer, running
from tests.monitoring.conftest import PROMETHEUS_DIR

pytestmark = [pytest.mark.usefixtures("mosquitto_installed"), pytest.mark.timeout(180)]

WAIT = 60.0  # a deadline for what Prometheus should see within seconds


def configuration(directory: Path, targets: dict[str, str]) -> Path:
    """deploy/prometheus/prometheus.yml and its rules, for `targets` (job: host:port)."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(targets) <= set(jobs), "the example configuration lacks a fieldline job"
    config["scrape_configs"] = [
        {**jobs[name], "static_configs": [{"targets": [target]}]}
        for name, target in targets.items()
    ]
    rules = yaml.safe_load((PROMETHEUS_DIR / "fieldline-rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == "FieldlineIngestDown":
                rule["for"] = "2s"
    (directory / "fieldline-rules.yml").write_text(yaml.safe_dump(rules))
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def prometheus_running(binary: str, directory: Path, config: Path) -> Iterator[str]:
    port = free_port("127.0.0.1")
    log = directory / "prometheus.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_for(what: str, check: Any, log: Path) -> Any:
    """Poll `check()` until it answers something true; fail after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            answer = await check()
        except httpx.TransportError:
            answer = None  # Prometheus still starting
        if answer:
            return answer
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen in {WAIT:g} s:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.2)


async def test_ingest_down_fires_when_ingest_stops(
    workdir: Path, pg15_database_url: str, prometheus: str
) -> None:
    broker = MosquittoServer(workdir / "mosquitto")
    await broker.start()
    deployment = Deployment(workdir, pg15_database_url, broker)
    with running(deployment):
        await deployment.start_api()
        ingest = await deployment.start_ingest("1")
        await deployment.start_worker(FIELDLINE_OPS_PORT=str(free_port("127.0.0.1")))
        hostport = {name: deployment.ops_url(name).removeprefix("http://")
                    for name in ("ingest-1", "worker")}  # fmt: skip
        targets = {
            "fieldline-api": deployment.api_url.removeprefix("http://"),
            "fieldline-ingest": hostport["ingest-1"],
            "fieldline-worker": hostport["worker"],
        }
        directory = workdir / "prometheus"
        directory.mkdir()
        config = configuration(directory, targets)
        log = directory / "prometheus.log"
        with prometheus_running(prometheus, directory, config) as url:
            async with httpx.AsyncClient(base_url=url, timeout=5) as http:

                async def query(expression: str) -> list[dict[str, Any]]:
                    answer = await http.get("/api/v1/query", params={"query": expression})
                    result: list[dict[str, Any]] = answer.json()["data"]["result"]
                    return result

                async def all_up() -> bool:
                    series = await query('up{job=~"fieldline-.*"} == 1')
                    return {s["metric"]["job"] for s in series} == set(targets)

                async def ingest_alerts() -> list[dict[str, Any]]:
                    alerts = (await http.get("/api/v1/alerts")).json()["data"]["alerts"]
                    return [a for a in alerts if a["labels"]["alertname"] == "FieldlineIngestDown"]

                async def ingest_firing() -> list[dict[str, Any]]:
                    return [a for a in await ingest_alerts() if a["state"] == "firing"]

                async def scraped_fieldline_metrics() -> list[dict[str, Any]]:
                    return await query(
                        'fieldline_ingest_broker_connected{job="fieldline-ingest"} == 1'
                    )

                async def ready() -> bool:
                    return (await http.get("/-/ready")).status_code == 200

                await wait_for("Prometheus ready", ready, log)
                await wait_for("every fieldline target up", all_up, log)
                await wait_for("ingest's metrics scraped", scraped_fieldline_metrics, log)

                async def rules_evaluated() -> bool:
                    groups = (await http.get("/api/v1/rules")).json()["data"]["groups"]
                    health = {rule["health"] for group in groups for rule in group["rules"]}
                    assert "err" not in health, groups  # a shipped rule Prometheus refuses
                    return health == {"ok"}

                await wait_for("every rule evaluated", rules_evaluated, log)
                assert await ingest_alerts() == []  # all running: quiet

                ingest.stop()
                (alert,) = await wait_for("FieldlineIngestDown firing", ingest_firing, log)

        assert alert["labels"] == {
            "alertname": "FieldlineIngestDown",
            "job": "fieldline-ingest",
            "instance": targets["fieldline-ingest"],
            "severity": "critical",
        }
        assert alert["annotations"]["summary"] == (
            f"fieldline ingest {targets['fieldline-ingest']} is down"
        )
