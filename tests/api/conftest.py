"""The API in-process over ASGI, on real PostgreSQL 15 and a real (in-process amqtt) broker."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fieldline.api.app import create_app
from fieldline.api.context import ApiContext
from fieldline.broker.embedded import AmqttBroker
from fieldline.broker.publisher import Publisher
from fieldline.config import Settings
from fieldline.domain.topics import TopicScheme
from fieldline.ops.metrics import Metrics
from fieldline.runtime.admin import ensure_admin
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.migrate import migrate
from tests.conftest import PgServer
from tests.e2e.conftest import Platform, start_platform, stop_platform

ADMIN_PASSWORD = "correct-horse-battery"
SECRET_KEY = "k" * 40


@dataclass
class Api:
    http: httpx.AsyncClient
    pool: Pool
    url: str
    broker: AmqttBroker
    app: FastAPI

    @property
    def context(self) -> ApiContext:
        """The context the app serves with now (`use` replaces it)."""
        context: ApiContext = self.app.state.context
        return context

    def use(self, context: ApiContext) -> None:
        """Serve further requests with `context` (it is immutable: a test builds another)."""
        self.app.state.context = context

    def reconfigure(self, **changes: object) -> None:
        """Serve further requests under settings with `changes`, as if configured so."""
        self.use(self.context.with_settings(self.context.settings.model_copy(update=changes)))

    async def login(self, username: str, password: str) -> dict[str, str]:
        response = await self.http.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def user(self, role: str) -> dict[str, str]:
        """Headers of a fresh user with `role`."""
        admin = await self.login("admin", ADMIN_PASSWORD)
        username = f"{role}-{uuid.uuid4().hex[:12]}"
        created = await self.http.post(
            "/api/v1/users",
            headers=admin,
            json={"username": username, "password": "a-long-password", "role": role},
        )
        assert created.status_code == 201, created.text
        return await self.login(username, "a-long-password")


@pytest.fixture
async def api(pg15_database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=pg15_database_url,
        admin_password=ADMIN_PASSWORD,
        secret_key=SECRET_KEY,
        device_hash_iterations=1000,
    )
    await migrate(pg15_database_url)
    pool = await open_pool(pg15_database_url, min_size=1, max_size=4)
    broker = AmqttBroker(host="127.0.0.1", port=0, topics=TopicScheme())
    await broker.start([])
    await ensure_admin(pool, settings)
    context = ApiContext.build(settings, pool=pool, broker=broker, metrics=Metrics())
    context.broker_started.set()
    app = create_app(context)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fieldline") as http:
        api = Api(http=http, pool=pool, url=pg15_database_url, broker=broker, app=app)
        yield api
    await api.context.close()  # as the server does once it stops
    await broker.stop()
    await pool.close()


@pytest.fixture
async def admin(api: Api) -> dict[str, str]:
    return await api.login("admin", ADMIN_PASSWORD)


@pytest.fixture
async def publisher(api: Api) -> AsyncIterator[Publisher]:
    """The API's downlink publisher, as `fieldline up` and `fieldline api` give it one."""
    publisher = Publisher(api.broker.endpoint, api.broker.service, role="test")
    await publisher.start()
    without = api.context
    api.use(dataclasses.replace(without, publisher=publisher))
    yield publisher
    api.use(without)
    await publisher.stop()


@contextlib.contextmanager
def platform_on_pg15(pg15: PgServer, label: str, env: dict[str, str]) -> Iterator[Platform]:
    """`fieldline up` as a real process, on a PostgreSQL 15 database of its own: for what
    only a real server shows (its memory, real connections, uvicorn's own HTTP)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"fieldline-{label}-"))
    database = pg15.create_database()
    running = start_platform(label, {"DATABASE_URL": pg15.url_for(database), **env}, tmp / "data")
    try:
        yield running
    finally:
        stop_platform(running)
        pg15.drop_database(database)
        shutil.rmtree(tmp, ignore_errors=True)
