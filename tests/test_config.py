"""Settings handed to a child process through its environment arrive unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from fieldline.config import BrokerKind, LogFormat, Settings, environment
from fieldline.runtime.requirements import ConfigurationError, check_component


def test_environment_loads_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FIELDLINE_") or key == "DATABASE_URL":
            monkeypatch.delenv(key)
    settings = Settings(
        data_dir=Path("/srv/fieldline"),
        database_url="postgresql://fieldline:pw@db/fieldline",
        broker=BrokerKind.EXTERNAL,
        mqtt_port=1884,
        mqtt_tls_port=8883,
        mqtt_plaintext=False,
        broker_mqtt5=False,
        broker_service_password=SecretStr("a-long-random-service-password"),
        max_future_skew_seconds=12.5,
        ingest_share_group="",
        log_format=LogFormat.JSON,
    )
    variables = environment(settings)
    assert "FIELDLINE_PUBLIC_URL" not in variables  # unset stays unset
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mqtt_plaintext": False}, "FIELDLINE_MQTT_PLAINTEXT=false needs FIELDLINE_MQTT_TLS_PORT"),
        ({"broker": "amqtt", "mqtt_tls_port": 8883}, "FIELDLINE_MQTT_TLS_PORT needs Mosquitto"),
        ({"broker": "external", "broker_tls": True}, "FIELDLINE_BROKER_TLS needs"),
        (
            {"broker": "external", "broker_admin_username": "operator"},
            "FIELDLINE_BROKER_ADMIN_USERNAME is set without its password",
        ),
    ],
)
def test_settings_no_broker_can_start_with_are_refused_at_once(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(data_dir=Path("/srv/fieldline"), **values)  # type: ignore[arg-type]


def test_what_a_component_needs_beyond_valid_settings() -> None:
    # Valid settings: `fieldline up` runs its own database and broker.
    local = Settings(data_dir=Path("/srv/fieldline"), database_url=None, broker=BrokerKind.AUTO)
    with pytest.raises(ConfigurationError, match=r"`fieldline worker` .* set DATABASE_URL"):
        check_component(local, "worker")
    url = "postgresql://fieldline@db/fieldline"
    on_database = local.model_copy(update={"database_url": url})
    assert check_component(on_database, "worker") == url  # it needs no broker
    for component in ("api", "ingest"):
        with pytest.raises(ConfigurationError, match="FIELDLINE_BROKER=external"):
            check_component(on_database, component)  # type: ignore[arg-type]
