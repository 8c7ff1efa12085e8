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


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"retention_raw_days": 30, "retention_hourly_days": 20},
            "FIELDLINE_RETENTION_HOURLY_DAYS=20 keeps rollups for less time than"
            " FIELDLINE_RETENTION_RAW_DAYS=30 keeps what they summarise: set"
            " FIELDLINE_RETENTION_HOURLY_DAYS to at least 30 days, or 0 to keep them",
        ),
        (
            {"retention_hourly_days": 400, "retention_daily_days": 90},
            "FIELDLINE_RETENTION_DAILY_DAYS=90 keeps rollups for less time than"
            " FIELDLINE_RETENTION_HOURLY_DAYS=400",
        ),
        (
            {"retention_raw_days": 0, "retention_hourly_days": 400},
            "FIELDLINE_RETENTION_RAW_DAYS=0 \\(kept for good\\)",
        ),
        (
            {"retention_hourly_days": 0, "retention_daily_days": 3650},
            "FIELDLINE_RETENTION_HOURLY_DAYS=0 \\(kept for good\\)",
        ),
        (
            {"retention_raw_days": 7},
            "FIELDLINE_RETENTION_RAW_DAYS=7 is shorter than FIELDLINE_DEDUP_WINDOW_DAYS=30",
        ),
    ],
)
def test_retention_that_would_lose_data_is_refused(values: dict[str, int], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(data_dir=Path("/srv/fieldline"), **values)  # type: ignore[arg-type]


def test_retention_settings_that_keep_what_they_promise_load() -> None:
    for raw, hourly, daily, window in [
        (30, 400, 0, 30),  # the defaults
        (7, 30, 365, 7),  # a short raw tier with a window as short
        (0, 0, 0, 30),  # everything kept
        (90, 90, 90, 30),  # every tier as long as the one below
    ]:
        settings = Settings(
            data_dir=Path("/srv/fieldline"),
            retention_raw_days=raw,
            retention_hourly_days=hourly,
            retention_daily_days=daily,
            dedup_window_days=window,
        )
        assert (settings.retention_raw_days, settings.retention_daily_days) == (raw, daily)
