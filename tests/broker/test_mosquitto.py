"""Mosquitto specifics: reconciling on restart, supervision, an external broker."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from fieldline.broker import dynsec
from fieldline.broker.base import BrokerError, ServiceAccount
from fieldline.broker.control import DynsecControl
from fieldline.broker.drift import inspect
from fieldline.broker.mosquitto import ExternalMosquitto, ManagedMosquitto
from fieldline.config import BrokerKind, Settings
from fieldline.security.passwords import generate_secret, hash_secret
from tests.deployment import MosquittoServer

from .conftest import TOPICS, credential, eventually, needs_mosquitto, refused

pytestmark = needs_mosquitto


def managed(data_dir: Path, port: int = 0) -> ManagedMosquitto:
    return ManagedMosquitto(data_dir=data_dir, host="127.0.0.1", port=port, topics=TOPICS)


async def test_restart_with_changed_registry_reconciles(tmp_path: Path) -> None:
    alice, bob, carol = credential("alice"), credential("bob"), credential("carol")
    first = managed(tmp_path)
    await first.start([alice.device, bob.device])
    port = first.endpoint.port
    await first.stop()
    files = tmp_path / "mosquitto"
    assert stat.S_IMODE(os.stat(files / "accounts.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(files / "dynamic-security.json").st_mode) == 0o600

    new_password = generate_secret()
    rotated = dataclasses.replace(
        alice.device, secret_hash=hash_secret(new_password, iterations=1_000).encode()
    )
    second = managed(tmp_path, port)
    drift = await second.start([rotated, carol.device])
    try:
        assert drift.missing == ("carol",)
        assert drift.unexpected == ("bob",)
        assert drift.changed == ("alice",)
        endpoint = second.endpoint
        assert await refused(endpoint, "bob", bob.password)
        assert await refused(endpoint, "alice", alice.password)
        assert not await refused(endpoint, "alice", new_password)
        assert not await refused(endpoint, "carol", carol.password)
    finally:
        await second.stop()


async def test_rotation_without_plaintext_restarts_with_the_new_hash(
    tmp_path: Path, probes
) -> None:
    alice = credential("alice")
    broker = managed(tmp_path)
    await broker.start([alice.device])
    try:
        device = await probes(broker.endpoint, "alice", alice.password)
        new_password = generate_secret()
        rotated = dataclasses.replace(
            alice.device, secret_hash=hash_secret(new_password, iterations=1_000).encode()
        )

        await broker.apply(rotated)

        assert await eventually(device.dropped.is_set)
        assert await refused(broker.endpoint, "alice", alice.password)
        assert not await refused(broker.endpoint, "alice", new_password)
    finally:
        await broker.stop()


async def test_a_killed_mosquitto_is_restarted(tmp_path: Path) -> None:
    alice = credential("alice")
    broker = managed(tmp_path)
    await broker.start([alice.device])
    try:
        pid = broker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        assert await eventually(lambda: broker.pid not in (None, pid), within=10)
        assert await _eventually_async(broker.healthy, within=10)
        # The admin connection came back too: runtime changes still work.
        await broker.apply(dataclasses.replace(alice.device, enabled=False))
        assert await refused(broker.endpoint, "alice", alice.password)
    finally:
        await broker.stop()


async def _eventually_async(check, *, within: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def test_password_must_match_the_hash(tmp_path: Path) -> None:
    alice = credential("alice")
    broker = managed(tmp_path)
    await broker.start([])
    try:
        with pytest.raises(BrokerError):
            await broker.apply(alice.device, password="not-the-secret")
    finally:
        await broker.stop()


@pytest.fixture
async def external(
    tmp_path: Path,
) -> AsyncIterator[tuple[ExternalMosquitto, ServiceAccount, int, str]]:
    """A Mosquitto fieldline does not manage, set up the way its docs say."""
    server = MosquittoServer(tmp_path / "external", admin_username="operator")
    await server.start()
    service = ServiceAccount(username="ingest", password=generate_secret())
    broker = external_broker(server.port, server.admin_password, service)
    yield broker, service, server.port, server.admin_password
    await broker.stop()
    server.stop()


def external_broker(port: int, admin_password: str, service: ServiceAccount) -> ExternalMosquitto:
    return ExternalMosquitto(
        host="127.0.0.1",
        port=port,
        topics=TOPICS,
        admin_username="operator",
        admin_password=admin_password,
        service=service,
    )


async def test_external_broker_reconcile_reports_and_fixes_drift(external, probes) -> None:
    broker, service, port, admin_password = external
    alice, bob = credential("alice"), credential("bob")

    drift = await broker.start([alice.device, bob.device])

    assert drift.missing == ("alice", "bob")
    # Without plaintexts the broker cannot hold the secrets yet: refused until applied.
    assert await refused(broker.endpoint, "alice", alice.password)
    await broker.apply(alice.device, password=alice.password)
    await broker.apply(bob.device, password=bob.password)
    ingest = await probes(broker.endpoint, service.username, service.password)
    await ingest.subscribe(f"$share/ingest/{TOPICS.prefix}/+/telemetry")
    device = await probes(broker.endpoint, "alice", alice.password)
    device.publish(f"{TOPICS.prefix}/alice/telemetry", b"1")
    assert await eventually(lambda: ingest.got(f"{TOPICS.prefix}/alice/telemetry", b"1"))
    await broker.stop()

    # The registry moved on while fieldline was away: bob deleted, alice rotated, carol new.
    carol = credential("carol")
    rotated = dataclasses.replace(
        alice.device, secret_hash=hash_secret("new-secret", iterations=1_000).encode()
    )
    again = external_broker(port, admin_password, service)
    try:
        drift = await again.start([rotated, carol.device])
        assert drift.missing == ("carol",)
        assert drift.unexpected == ("bob",)
        assert drift.changed == ("alice",)
        assert await eventually(device.dropped.is_set)
        assert await refused(again.endpoint, "alice", alice.password)
        assert await refused(again.endpoint, "bob", bob.password)
        await again.apply(rotated, password="new-secret")
        assert not await refused(again.endpoint, "alice", "new-secret")

        # Unmanaged clients (the operator) are left alone; bob is gone.
        control = DynsecControl(
            host="127.0.0.1", port=port, username="operator", password=admin_password
        )
        await control.connect()
        listed = await control.execute([dynsec.list_clients()])
        await control.close()
        names = {c["username"] for c in listed[0].data["clients"]}
        assert names == {"operator", "ingest", "alice", "carol"}
    finally:
        await again.stop()


async def test_external_clients_not_bound_to_their_client_id_are_drift_and_get_bound(
    external, tmp_path: Path
) -> None:
    broker, service, port, admin_password = external
    alice = credential("alice")
    # A device client as fieldline created it before binding client ids: any id works.
    control = DynsecControl(
        host="127.0.0.1", port=port, username="operator", password=admin_password
    )
    await control.connect()
    role = dynsec.device_role("alice")
    await control.execute(
        [
            dynsec.create_role(role, dynsec.device_acls(TOPICS, "alice")),
            dynsec.create_client(
                "alice",
                password=alice.password,
                roles=[role],
                description=dynsec.describe(dynsec.fingerprint(alice.device.secret_hash)),
            ),
        ]
    )
    await control.close()
    assert not await refused(broker.endpoint, "alice", alice.password, client_id="bob")
    settings = Settings(
        data_dir=tmp_path,
        broker=BrokerKind.EXTERNAL,
        mqtt_host="127.0.0.1",
        mqtt_port=port,
        broker_admin_username="operator",
        broker_admin_password=SecretStr(admin_password),
        broker_service_username=service.username,
        broker_service_password=SecretStr(service.password),
    )

    # `fieldline broker drift` lists it; `--fix` and every start bind it.
    assert (await inspect(settings, [alice.device])).changed == ("alice",)
    assert (await broker.start([alice.device])).changed == ("alice",)

    assert (await inspect(settings, [alice.device])).clean
    assert await refused(broker.endpoint, "alice", alice.password, client_id="bob")
    assert not await refused(broker.endpoint, "alice", alice.password)
