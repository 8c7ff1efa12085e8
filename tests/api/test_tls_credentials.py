"""Registration hands a device what it needs for MQTT over TLS: the port and the CA to verify."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from gmqtt.mqtt.constants import MQTTv311

from fieldline.api.app import create_app
from fieldline.api.context import ApiContext
from fieldline.broker.factory import create_broker
from fieldline.config import Settings
from fieldline.ops.metrics import Metrics
from fieldline.runtime.admin import ensure_admin
from fieldline.security.certs import issue_certificates
from fieldline.storage.db import open_pool
from fieldline.storage.migrate import migrate
from tests.api.conftest import ADMIN_PASSWORD, SECRET_KEY, Api
from tests.mqtt_clients import NoReconnectClient


@pytest.fixture
async def tls_api(
    pg15_database_url: str, tmp_path: Path, mosquitto_installed: None
) -> AsyncIterator[tuple[httpx.AsyncClient, ApiContext]]:
    """The API on a managed Mosquitto that listens with TLS only, as `fieldline up` runs it."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=pg15_database_url,
        admin_password=ADMIN_PASSWORD,
        secret_key=SECRET_KEY,
        device_hash_iterations=1000,
        broker="mosquitto",
        mqtt_port=0,
        mqtt_tls_port=0,
        mqtt_plaintext=False,
    )
    issue_certificates(settings.tls_ca_file.parent, names=["localhost", "127.0.0.1"])
    await migrate(pg15_database_url)
    pool = await open_pool(pg15_database_url, min_size=1, max_size=4)
    broker = create_broker(settings)
    await broker.start([])
    await ensure_admin(pool, settings)
    context = ApiContext.build(settings, pool=pool, broker=broker, metrics=Metrics())
    context.broker_started.set()
    transport = httpx.ASGITransport(app=create_app(context))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://fieldline") as http:
            login = await http.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
            yield http, context
    finally:
        await broker.stop()
        await pool.close()


async def connects(mqtt: dict[str, object]) -> bool:
    """Connect as firmware would, from the registration answer alone."""
    tls = ssl.create_default_context(cadata=str(mqtt["ca_certificate"]))
    host, port = str(mqtt["host"]), int(str(mqtt["tls_port"]))
    client = NoReconnectClient(str(mqtt["username"]))  # a device's client id is its id
    client.set_auth_credentials(str(mqtt["username"]), str(mqtt["password"]))
    try:
        await asyncio.wait_for(client.connect(host, port, ssl=tls, version=MQTTv311), 5)
        return bool(client.is_connected)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def test_registration_and_rotation_answer_the_tls_port_and_ca(
    tls_api: tuple[httpx.AsyncClient, ApiContext],
) -> None:
    http, context = tls_api
    ca_pem = context.settings.tls_ca_file.read_text()

    created = await http.post("/api/v1/devices", json={"device_id": "tls-1"})

    assert created.status_code == 201, created.text
    mqtt = created.json()["mqtt"]
    tls_port = context.broker.endpoint.tls_port
    assert tls_port not in (None, 0)  # port 0 was settled on the port actually served
    assert (mqtt["tls_port"], mqtt["port"]) == (tls_port, tls_port)
    assert mqtt["ca_certificate"] == ca_pem
    assert await connects(mqtt)

    rotated = await http.post("/api/v1/devices/tls-1/credentials")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["mqtt"]["ca_certificate"] == ca_pem
    assert await connects(rotated.json()["mqtt"])


async def test_without_tls_there_is_no_ca(api: Api, admin: dict[str, str]) -> None:
    created = await api.http.post("/api/v1/devices", headers=admin, json={"device_id": "plain-1"})

    assert created.status_code == 201, created.text
    assert created.json()["mqtt"]["tls_port"] is None
    assert created.json()["mqtt"]["ca_certificate"] is None
