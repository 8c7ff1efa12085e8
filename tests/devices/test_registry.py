"""Registering, rotating, disabling and deleting devices without HTTP: what the
registry, the audit log and the broker show afterwards."""

from __future__ import annotations

import pytest

from fieldline import devices
from fieldline.devices.errors import BrokerUpdateError
from fieldline.storage import audit as audit_store
from fieldline.storage import devices as device_store
from fieldline.storage.errors import GroupNotFoundError, NotFoundError
from tests.broker.conftest import refused
from tests.devices.conftest import HASH_ITERATIONS, TOPICS, Fleet

ACTOR = audit_store.user_actor("ops")


async def actions(fleet: Fleet, device_id: str) -> list[tuple[str, str]]:
    async with fleet.pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT actor, action FROM audit_log WHERE target_id = %s ORDER BY id",
                (device_id,),
            )
        ).fetchall()
    return [(row["actor"], row["action"]) for row in rows]


async def register(fleet: Fleet, device_id: str, **fields: object) -> devices.Registered:
    async with fleet.pool.connection() as conn:
        return await devices.register_device(
            conn,
            broker=fleet.broker,
            publisher=None,
            topics=TOPICS,
            hash_iterations=HASH_ITERATIONS,
            actor=ACTOR,
            device_id=device_id,
            **fields,  # type: ignore[arg-type]
        )


async def test_a_registered_device_connects_until_its_credentials_are_rotated(
    fleet: Fleet,
) -> None:
    registered = await register(fleet, "sensor-1", name="North field")
    assert registered.device.name == "North field"
    endpoint = fleet.broker.endpoint
    assert not await refused(endpoint, "sensor-1", registered.password)

    async with fleet.pool.connection() as conn:
        rotated = await devices.rotate_credentials(
            conn,
            broker=fleet.broker,
            hash_iterations=HASH_ITERATIONS,
            actor=ACTOR,
            device_id="sensor-1",
        )
    assert rotated != registered.password
    assert await refused(endpoint, "sensor-1", registered.password)
    assert not await refused(endpoint, "sensor-1", rotated)
    assert await actions(fleet, "sensor-1") == [
        (ACTOR, "device.create"),
        (ACTOR, "device.rotate_credentials"),
    ]


async def test_an_unknown_group_registers_nothing(fleet: Fleet) -> None:
    with pytest.raises(GroupNotFoundError):
        await register(fleet, "sensor-2", group="nowhere")
    async with fleet.pool.connection() as conn:
        with pytest.raises(NotFoundError):
            await device_store.get_device(conn, "sensor-2")
    assert await actions(fleet, "sensor-2") == []


async def test_a_disabled_device_is_refused_and_a_deleted_one_is_gone(fleet: Fleet) -> None:
    registered = await register(fleet, "sensor-3")
    endpoint = fleet.broker.endpoint
    async with fleet.pool.connection() as conn:
        disabled = await devices.update_device(
            conn,
            broker=fleet.broker,
            publisher=None,
            topics=TOPICS,
            actor=ACTOR,
            device_id="sensor-3",
            changes={"enabled": False},
        )
        assert not disabled.enabled
        assert await refused(endpoint, "sensor-3", registered.password)
        await devices.delete_device(
            conn,
            broker=fleet.broker,
            publisher=None,
            topics=TOPICS,
            actor=ACTOR,
            device_id="sensor-3",
        )
        with pytest.raises(NotFoundError):
            await device_store.get_device(conn, "sensor-3")
    assert await refused(endpoint, "sensor-3", registered.password)
    assert [action for _, action in await actions(fleet, "sensor-3")] == [
        "device.create",
        "device.disable",
        "device.delete",
    ]


async def test_a_broker_that_refuses_undoes_the_registration(fleet: Fleet) -> None:
    # The API refuses fieldline's own client ids before this; the broker refuses them too.
    with pytest.raises(BrokerUpdateError, match="nothing was changed"):
        await register(fleet, "fieldline-ingest")
    async with fleet.pool.connection() as conn:
        with pytest.raises(NotFoundError):
            await device_store.get_device(conn, "fieldline-ingest")
    assert await actions(fleet, "fieldline-ingest") == []
