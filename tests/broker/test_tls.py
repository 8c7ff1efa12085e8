"""MQTT over TLS: the managed TLS listener, TLS-only brokers, fieldline's own TLS clients."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from gmqtt.mqtt.constants import MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError

from fieldline.broker.base import BrokerEndpoint, BrokerError, ServiceAccount
from fieldline.broker.embedded import AmqttBroker
from fieldline.broker.factory import create_broker
from fieldline.broker.mosquitto import (
    ExternalMosquitto,
    ManagedMosquitto,
    TlsListener,
)
from fieldline.config import Settings
from fieldline.ops.sockets import accepts_connections, free_port
from fieldline.security.certs import CertificateFiles, client_ssl_context, issue_certificates
from fieldline.security.passwords import generate_secret, hash_secret
from tests.deployment import MosquittoServer

from .conftest import TOPICS, Credential, Probe, credential, eventually, needs_mosquitto, refused

TlsProbe = Callable[..., Awaitable[Probe]]


@pytest.fixture
def certs(tmp_path: Path) -> CertificateFiles:
    return issue_certificates(tmp_path / "certs").files


def listener(files: CertificateFiles, port: int = 0) -> TlsListener:
    return TlsListener(
        port=port, cert_file=files.server_cert, key_file=files.server_key, ca_file=files.ca_cert
    )


async def connect_tls(
    probe: Probe,
    host: str,
    port: int,
    tls: ssl.SSLContext,
    username: str,
    password: str,
) -> Probe:
    probe.client.set_auth_credentials(username, password)
    await asyncio.wait_for(
        probe.client.connect(host, port, ssl=tls, version=MQTTv311, keepalive=30), 5
    )
    return probe


@pytest.fixture
async def tls_probes() -> AsyncIterator[TlsProbe]:
    opened: list[Probe] = []

    async def open_probe(
        port: int, tls: ssl.SSLContext, username: str, password: str, host: str = "127.0.0.1"
    ) -> Probe:
        probe = Probe(username)  # a device's client id is its device id
        opened.append(probe)
        return await connect_tls(probe, host, port, tls, username, password)

    yield open_probe
    for probe in opened:
        await probe.close()


async def tls_refused(
    port: int, tls: ssl.SSLContext, username: str, password: str, host: str = "127.0.0.1"
) -> bool:
    probe = Probe(username)
    try:
        await connect_tls(probe, host, port, tls, username, password)
    except (MQTTConnectError, ConnectionError, TimeoutError):
        return True
    finally:
        await probe.close()
    return False


@pytest.fixture
async def tls_broker(
    tmp_path: Path, certs: CertificateFiles, alice: Credential, bob: Credential
) -> AsyncIterator[ManagedMosquitto]:
    broker = ManagedMosquitto(
        data_dir=tmp_path, host="127.0.0.1", port=0, topics=TOPICS, tls=listener(certs)
    )
    await broker.start([alice.device, bob.device])
    yield broker
    await broker.stop()


@needs_mosquitto
async def test_devices_publish_and_subscribe_over_tls(
    tls_broker: ManagedMosquitto,
    certs: CertificateFiles,
    alice: Credential,
    tls_probes: TlsProbe,
    probes,
) -> None:
    endpoint = tls_broker.endpoint
    assert endpoint.tls_port not in (None, 0, endpoint.port)
    assert endpoint.ca_file is None  # plaintext is still on: fieldline's clients use it
    tls = client_ssl_context(certs.ca_cert)
    assert endpoint.tls_port is not None
    service = await probes(endpoint, tls_broker.service.username, tls_broker.service.password)
    await service.subscribe(f"{TOPICS.prefix}/+/telemetry")
    device = await tls_probes(endpoint.tls_port, tls, "alice", alice.password)
    await device.subscribe(f"{TOPICS.prefix}/alice/commands")

    device.publish(f"{TOPICS.prefix}/alice/telemetry", b'{"t": 1}')
    service.publish(f"{TOPICS.prefix}/alice/commands", b"reboot")

    assert await eventually(lambda: service.got(f"{TOPICS.prefix}/alice/telemetry", b'{"t": 1}'))
    assert await eventually(lambda: device.got(f"{TOPICS.prefix}/alice/commands", b"reboot"))
    # The one dynamic-security plugin guards the TLS listener too.
    assert await tls_refused(endpoint.tls_port, tls, "alice", "wrong-password")
    assert await tls_refused(endpoint.tls_port, tls, "mallory", alice.password)


@needs_mosquitto
async def test_a_client_not_trusting_the_ca_fails_the_handshake(
    tls_broker: ManagedMosquitto, tmp_path: Path, alice: Credential
) -> None:
    port = tls_broker.endpoint.tls_port
    assert port is not None
    other_ca = issue_certificates(tmp_path / "other").files.ca_cert
    for untrusting in (ssl.create_default_context(), client_ssl_context(other_ca)):
        probe = Probe("alice")
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect_tls(probe, "127.0.0.1", port, untrusting, "alice", alice.password)
        await probe.close()


@needs_mosquitto
async def test_tls_only_broker_refuses_plaintext_and_is_administered_over_tls(
    tmp_path: Path, certs: CertificateFiles, tls_probes: TlsProbe, caplog: pytest.LogCaptureFixture
) -> None:
    alice = credential("alice")
    plain_port = free_port("127.0.0.1")
    broker = ManagedMosquitto(
        data_dir=tmp_path,
        host="127.0.0.1",
        port=plain_port,
        topics=TOPICS,
        tls=listener(certs),
        plaintext=False,
    )
    await broker.start([])
    try:
        endpoint = broker.endpoint
        assert endpoint.tls_port is not None and endpoint.port == endpoint.tls_port != plain_port
        assert endpoint.ca_file == certs.ca_cert
        host, port, tls = endpoint.client_target()
        assert (host, port) == ("127.0.0.1", endpoint.tls_port) and tls is not None
        assert not await accepts_connections("127.0.0.1", plain_port)
        with caplog.at_level(logging.INFO, logger="fieldline.ops.process"):
            for _ in range(10):
                assert await broker.healthy()
            await asyncio.sleep(0.5)  # Mosquitto's output arrives through a pipe
        # Start-up and health checks close TLS cleanly: no broker error logged for each.
        assert not [r for r in caplog.records if "SSL" in r.getMessage()]

        # Device changes travel over the admin connection, which now is TLS.
        await broker.apply(alice.device, password=alice.password)
        assert await refused(BrokerEndpoint("127.0.0.1", plain_port), "alice", alice.password)
        device = await tls_probes(port, tls, "alice", alice.password)
        await broker.apply(dataclasses.replace(alice.device, enabled=False))
        assert await eventually(device.dropped.is_set)
        assert await tls_refused(port, tls, "alice", alice.password)
        await broker.remove("alice")
        service = broker.service
        assert not await tls_refused(port, tls, service.username, service.password)
    finally:
        await broker.stop()


@needs_mosquitto
async def test_tls_only_broker_restarts_to_install_a_secret_without_plaintext(
    tmp_path: Path, certs: CertificateFiles
) -> None:
    alice = credential("alice")
    broker = ManagedMosquitto(
        data_dir=tmp_path,
        host="127.0.0.1",
        port=0,
        topics=TOPICS,
        tls=listener(certs),
        plaintext=False,
    )
    await broker.start([alice.device])
    try:
        port = broker.endpoint.port
        new_password = generate_secret()
        rotated = dataclasses.replace(
            alice.device, secret_hash=hash_secret(new_password, iterations=1_000).encode()
        )

        await broker.apply(rotated)  # restarts Mosquitto and reconnects over TLS

        tls = client_ssl_context(certs.ca_cert)
        assert broker.endpoint.port == port  # devices keep the port they were given
        assert await tls_refused(port, tls, "alice", alice.password)
        assert not await tls_refused(port, tls, "alice", new_password)
    finally:
        await broker.stop()


@needs_mosquitto
async def test_missing_certificate_files_are_a_clear_error(tmp_path: Path) -> None:
    files = CertificateFiles(tmp_path / "certs")
    broker = ManagedMosquitto(
        data_dir=tmp_path, host="127.0.0.1", port=0, topics=TOPICS, tls=listener(files)
    )
    with pytest.raises(BrokerError, match="run `fieldline certs`"):
        await broker.start([])
    await broker.stop()


@needs_mosquitto
async def test_a_key_not_matching_the_certificate_is_a_clear_error(
    tmp_path: Path, certs: CertificateFiles
) -> None:
    other = issue_certificates(tmp_path / "other").files
    mixed = TlsListener(
        port=0, cert_file=certs.server_cert, key_file=other.server_key, ca_file=certs.ca_cert
    )
    broker = ManagedMosquitto(data_dir=tmp_path, host="127.0.0.1", port=0, topics=TOPICS, tls=mixed)
    with pytest.raises(BrokerError, match="unusable TLS files"):
        await broker.start([])
    await broker.stop()


@pytest.fixture
async def external_tls(tmp_path: Path, certs: CertificateFiles) -> AsyncIterator[tuple[int, str]]:
    """A Mosquitto fieldline does not manage, listening with TLS only."""
    server = MosquittoServer(
        tmp_path / "external",
        admin_username="operator",
        plaintext=False,
        tls_port=free_port("127.0.0.1"),
        tls_files=(certs.ca_cert, certs.server_cert, certs.server_key),
    )
    await server.start()
    yield server.port, server.admin_password
    server.stop()


@needs_mosquitto
async def test_external_broker_administered_over_tls(
    external_tls: tuple[int, str], certs: CertificateFiles, tls_probes: TlsProbe
) -> None:
    port, admin_password = external_tls
    alice = credential("alice")
    broker = ExternalMosquitto(
        host="127.0.0.1",
        port=1883,  # what devices would be told; nothing listens there
        tls_port=port,
        ca_file=certs.ca_cert,
        topics=TOPICS,
        admin_username="operator",
        admin_password=admin_password,
        service=ServiceAccount(username="ingest", password=generate_secret()),
    )
    await broker.start([alice.device])
    try:
        await broker.apply(alice.device, password=alice.password)
        assert await broker.healthy()
        await tls_probes(port, client_ssl_context(certs.ca_cert), "alice", alice.password)
    finally:
        await broker.stop()


def test_client_target() -> None:
    assert BrokerEndpoint("10.0.0.2", 1883, tls_port=8883).client_target() == (
        "10.0.0.2",
        1883,
        None,
    )
    assert BrokerEndpoint("0.0.0.0", 1883).client_target()[0] == "127.0.0.1"
    with pytest.raises(ValueError, match="needs a TLS port"):
        BrokerEndpoint("127.0.0.1", 1883, ca_file=Path("ca.crt"))


def test_client_target_with_tls(certs: CertificateFiles, tmp_path: Path) -> None:
    host, port, tls = BrokerEndpoint(
        "mqtt.example.com", 1883, tls_port=8883, ca_file=certs.ca_cert
    ).client_target()
    assert (host, port) == ("mqtt.example.com", 8883)
    assert tls is not None and tls.check_hostname and tls.verify_mode == ssl.CERT_REQUIRED
    missing = BrokerEndpoint("127.0.0.1", 1883, tls_port=8883, ca_file=tmp_path / "nope.crt")
    with pytest.raises(BrokerError, match="fieldline certs"):
        missing.client_target()


@needs_mosquitto
def test_factory_builds_tls_brokers_from_settings(tmp_path: Path) -> None:
    def settings(**values: object) -> Settings:
        return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]

    managed = create_broker(settings(broker="mosquitto", mqtt_tls_port=8883, mqtt_plaintext=False))
    assert isinstance(managed, ManagedMosquitto)
    assert managed.endpoint == BrokerEndpoint(
        "127.0.0.1", 8883, tls_port=8883, ca_file=tmp_path / "certs" / "ca.crt"
    )
    with pytest.raises(ValueError, match="FIELDLINE_MQTT_TLS_PORT"):
        create_broker(settings(broker="mosquitto", mqtt_plaintext=False))
    with pytest.raises(ValueError, match="amqtt"):
        create_broker(settings(broker="amqtt", mqtt_tls_port=8883))
    assert isinstance(create_broker(settings(broker="amqtt")), AmqttBroker)

    external = {
        "broker": "external",
        "broker_service_username": "ingest",
        "broker_service_password": "s3rvice-pw-x",
        "broker_admin_username": "operator",
        "broker_admin_password": "adm1n-pw-x",
        "mqtt_tls_port": 8883,
    }
    administered = create_broker(settings(**external, broker_tls=True))
    assert isinstance(administered, ExternalMosquitto)
    assert administered.endpoint.client_port == 8883
    assert administered.endpoint.ca_file == tmp_path / "certs" / "ca.crt"
    assert create_broker(settings(**external)).endpoint.ca_file is None
