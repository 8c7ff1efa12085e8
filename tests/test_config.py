"""Settings handed to a child process through its environment arrive unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from fieldline.config import BrokerKind, LogFormat, Settings, environment


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
