"""Which adapter the settings select."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldline.broker.embedded import AmqttBroker
from fieldline.broker.factory import create_broker
from fieldline.broker.mosquitto import ExternalMosquitto, ManagedMosquitto
from fieldline.broker.unmanaged import UnmanagedBroker
from fieldline.config import Settings


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


@pytest.mark.usefixtures("mosquitto_installed")
def test_auto_prefers_installed_mosquitto(tmp_path: Path) -> None:
    assert isinstance(create_broker(settings(tmp_path)), ManagedMosquitto)


def test_auto_falls_back_to_amqtt(tmp_path: Path) -> None:
    chosen = create_broker(settings(tmp_path, mosquitto_bin="no-such-mosquitto"))
    assert isinstance(chosen, AmqttBroker)
    assert isinstance(create_broker(settings(tmp_path, broker="amqtt")), AmqttBroker)


def test_external_with_and_without_admin_credentials(tmp_path: Path) -> None:
    service = {"broker_service_username": "ingest", "broker_service_password": "s3rvice-pw-x"}
    plain = create_broker(settings(tmp_path, broker="external", **service))
    assert isinstance(plain, UnmanagedBroker)
    assert plain.service.username == "ingest"
    administered = create_broker(
        settings(
            tmp_path,
            broker="external",
            broker_admin_username="operator",
            broker_admin_password="adm1n-pw-x",
            **service,
        )
    )
    assert isinstance(administered, ExternalMosquitto)
    with pytest.raises(ValueError, match="SERVICE"):
        create_broker(settings(tmp_path, broker="external"))
