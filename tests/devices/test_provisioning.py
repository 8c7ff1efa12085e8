"""Self-provisioning without HTTP: a signed request creates the device once; signing
it again is a replay, and provisioning it again needs an operator's allowance."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from psycopg import AsyncConnection

from fieldline import devices
from fieldline.devices.errors import AlreadyProvisionedError, ProvisioningRefusedError
from fieldline.security.provisioning import DEFAULT_KEY_ID, SecretBox, sign
from fieldline.storage import provisioning as key_store
from fieldline.storage.db import Row
from tests.broker.conftest import refused
from tests.devices.conftest import HASH_ITERATIONS, TOPICS, Fleet

SECRET = "a-shared-factory-secret"
BOX = SecretBox.from_secret_key("k" * 40)


async def signed_by_default_key(
    conn: AsyncConnection[Row], body: bytes, *, at: int
) -> devices.Signer:
    return await devices.authenticate(
        conn,
        box=BOX,
        default_secret=SECRET,
        key_id=DEFAULT_KEY_ID,
        timestamp=str(at),
        signature=sign(SECRET, at, body),
        body=body,
    )


async def provision(
    conn: AsyncConnection[Row], signer: devices.Signer, fleet: Fleet
) -> devices.Provisioned:
    return await devices.provision(
        conn,
        broker=fleet.broker,
        publisher=None,
        topics=TOPICS,
        hash_iterations=HASH_ITERATIONS,
        signer=signer,
        device_id="tracker-7",
        device_type="gps",
    )


async def test_a_signed_request_provisions_a_device_once(fleet: Fleet) -> None:
    body = orjson.dumps({"device_id": "tracker-7"})
    now = int(time.time())
    async with fleet.pool.connection() as conn:
        signer = await signed_by_default_key(conn, body, at=now)
        provisioned = await provision(conn, signer, fleet)
        assert provisioned.created
        assert not await refused(fleet.broker.endpoint, "tracker-7", provisioned.password)

        with pytest.raises(ProvisioningRefusedError) as replay:
            await signed_by_default_key(conn, body, at=now)
        assert replay.value.code == "replayed"

        again = await signed_by_default_key(conn, body, at=now + 1)
        with pytest.raises(AlreadyProvisionedError):
            await provision(conn, again, fleet)

        await key_store.allow_reprovision(
            conn,
            "tracker-7",
            allowed_by="user:ops",
            expires_at=datetime.now(UTC) + timedelta(minutes=5),
        )
        renewed = await provision(conn, again, fleet)
    assert not renewed.created
    assert await refused(fleet.broker.endpoint, "tracker-7", provisioned.password)
    assert not await refused(fleet.broker.endpoint, "tracker-7", renewed.password)


async def test_no_default_key_without_its_secret(fleet: Fleet) -> None:
    body = b"{}"
    at = int(time.time())
    async with fleet.pool.connection() as conn:
        with pytest.raises(ProvisioningRefusedError) as refusal:
            await devices.authenticate(
                conn,
                box=BOX,
                default_secret=None,
                key_id=DEFAULT_KEY_ID,
                timestamp=str(at),
                signature=sign(SECRET, at, body),
                body=body,
            )
    assert refusal.value.code == "unknown_key"
