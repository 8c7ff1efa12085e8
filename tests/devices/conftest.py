"""The device use-cases without HTTP: a real PostgreSQL 15 database and a real
(in-process amqtt) broker, as the API has them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from fieldline.broker.embedded import AmqttBroker
from fieldline.domain.topics import TopicScheme
from fieldline.storage.db import Pool, open_pool
from fieldline.storage.migrate import migrate

TOPICS = TopicScheme("devices")
# Few iterations keep the tests fast; the broker treats any count alike.
HASH_ITERATIONS = 1_000


@dataclass(frozen=True, slots=True)
class Fleet:
    pool: Pool
    broker: AmqttBroker


@pytest.fixture
async def fleet(pg15_database_url: str) -> AsyncIterator[Fleet]:
    await migrate(pg15_database_url)
    pool = await open_pool(pg15_database_url, min_size=1, max_size=2)
    broker = AmqttBroker(host="127.0.0.1", port=0, topics=TOPICS)
    await broker.start([])
    try:
        yield Fleet(pool, broker)
    finally:
        await broker.stop()
        await pool.close()
