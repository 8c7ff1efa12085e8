"""docs/deploy.md, step by step: api, two ingest and a worker as separate processes against
this machine's PostgreSQL and a Mosquitto with dynamic security and TLS."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gmqtt.mqtt.constants import MQTTv311

from fieldline.broker import dynsec
from fieldline.broker.control import DynsecControl
from fieldline.ops.sockets import free_port
from tests.deployment import Deployment, MosquittoServer, running
from tests.mqtt_clients import NoReconnectClient

pytestmark = [pytest.mark.usefixtures("mosquitto_installed"), pytest.mark.timeout(240)]


def fieldline(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_three_process_deployment_with_tls(workdir: Path, pg15_database_url: str) -> None:
    # Step 3: certificates.
    certs = workdir / "certs"
    made = fieldline(
        "certs", "--out", str(certs), "--san", "mqtt.example.com", env=dict(os.environ)
    )
    assert made.returncode == 0, made.stderr
    assert "CA fingerprint" in made.stdout

    # Step 4: Mosquitto with dynamic security, persistence and a TLS listener.
    tls_port = free_port("127.0.0.1")
    broker = MosquittoServer(
        workdir / "mosquitto",
        tls_port=tls_port,
        tls_files=(certs / "ca.crt", certs / "server.crt", certs / "server.key"),
    )
    await broker.start()

    # Step 5: one set of settings; fieldline's own clients use TLS too.
    deployment = Deployment(
        workdir,
        pg15_database_url,
        broker,
        extra_env={
            "FIELDLINE_MQTT_TLS_PORT": str(tls_port),
            "FIELDLINE_MQTT_TLS_CA_FILE": str(certs / "ca.crt"),
            "FIELDLINE_BROKER_TLS": "true",
            "FIELDLINE_INGEST_SHARE_GROUP": "fieldline",
            "FIELDLINE_WORKER_INTERVAL_SECONDS": "1",
            "FIELDLINE_ONLINE_TIMEOUT_SECONDS": "3",
        },
    )
    with running(deployment):
        # Step 6: the processes.
        await deployment.start_api()
        first = await deployment.start_ingest("1")
        await deployment.start_ingest("2")
        deployment.components["worker"] = worker = deployment._component(
            "worker",
            ["worker"],
            "fieldline worker running",
            FIELDLINE_OPS_PORT=str(free_port("127.0.0.1")),
        )
        worker.start()
        await worker.wait_ready()
        assert "(TLS)" in first.log.read_text()

        # Step 7: check it.
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(deployment.api_url + "/ready")).status_code == 200
            for name in ("ingest-1", "ingest-2", "worker"):
                ready = await http.get(deployment.ops_url(name) + "/ready")
                assert ready.status_code == 200, (name, ready.text)

        credentials = await deployment.register(["sensor-1", "sensor-2"])
        mqtt = credentials["sensor-1"]
        assert mqtt["tls_port"] == tls_port
        assert mqtt["ca_certificate"] == (certs / "ca.crt").read_text()

        # A device verifies the broker with the CA it was given, and publishes over TLS.
        ca_file = workdir / "device-ca.crt"
        ca_file.write_text(mqtt["ca_certificate"])
        device = NoReconnectClient("sensor-1")  # its client id is its device id
        device.set_auth_credentials("sensor-1", mqtt["password"])
        await device.connect(
            "127.0.0.1",
            tls_port,
            ssl=ssl.create_default_context(cafile=str(ca_file)),
            version=MQTTv311,
        )
        start_ms = int(time.time() * 1000) - 40_000
        for i in range(40):
            reading = {"temperature": 20 + i / 10}
            device.publish(
                "devices/sensor-1/telemetry",
                json.dumps({"message_id": f"m{i}", "timestamp": start_ms + i, "sensors": reading}),
                qos=1,
            )
        headers = await deployment.admin_headers()
        async with httpx.AsyncClient(
            base_url=deployment.api_url, headers=headers, timeout=10
        ) as http:
            deadline = time.monotonic() + 30
            while True:
                latest = await http.get("/api/v1/devices/sensor-1/telemetry/latest")
                metrics = latest.json().get("metrics", {}) if latest.status_code == 200 else {}
                if metrics.get("temperature", {}).get("value") == pytest.approx(23.9):
                    break
                if time.monotonic() > deadline:
                    await device.disconnect()
                    raise AssertionError(latest.text)
                await asyncio.sleep(0.2)
            await device.disconnect()

            # Both ingest processes took a share through the shared subscription.
            received = [
                await deployment.metric(name, "fieldline_messages_received_total")
                for name in ("ingest-1", "ingest-2")
            ]
            assert all(count > 0 for count in received), received
            assert (
                await deployment.metric("ingest-1", "fieldline_readings_stored_total")
                + (await deployment.metric("ingest-2", "fieldline_readings_stored_total"))
                == 40
            )

            # The worker marks the device offline once it falls silent, with a status event.
            deadline = time.monotonic() + 30
            while await deployment.metric("worker", "fieldline_devices_timed_out_total") < 1:
                assert time.monotonic() < deadline, worker.tail()
                await asyncio.sleep(0.5)
            status = (await http.get("/api/v1/devices/sensor-1/status")).json()
            assert status["status"] == "offline", status

        # `fieldline broker drift`: clean, then an operator's change is shown and fixed.
        env = deployment.env(
            FIELDLINE_BROKER_ADMIN_USERNAME=broker.admin_username,
            FIELDLINE_BROKER_ADMIN_PASSWORD=broker.admin_password,
        )
        clean = fieldline("broker", "drift", env=env)
        assert clean.returncode == 0, clean.stderr
        assert "matches the registry (2 devices)" in clean.stdout
        control = DynsecControl(
            host="127.0.0.1",
            port=broker.port,
            username=broker.admin_username,
            password=broker.admin_password,
        )
        await control.connect()
        await control.execute([dynsec.delete_client("sensor-2")])
        await control.close()
        drifted = fieldline("broker", "drift", env=env)
        assert drifted.returncode == 1
        assert "missing from the broker (1): sensor-2" in drifted.stdout
        fixed = fieldline("broker", "drift", "--fix", env=env)
        assert fixed.returncode == 0, fixed.stderr
        assert "fixed" in fixed.stdout
        # The broker takes only plaintext secrets: sensor-2 is back, refused until rotated.
        still = fieldline("broker", "drift", env=env)
        assert "different (access or secret) (1): sensor-2" in still.stdout, still.stdout
        async with httpx.AsyncClient(
            base_url=deployment.api_url, headers=headers, timeout=10
        ) as http:
            rotated = await http.post("/api/v1/devices/sensor-2/credentials")
            assert rotated.status_code == 200, rotated.text
        again = fieldline("broker", "drift", env=env)
        assert again.returncode == 0, again.stdout

        # SIGTERM stops every process cleanly.
        assert deployment.stop_all() == dict.fromkeys(deployment.components, 0)
