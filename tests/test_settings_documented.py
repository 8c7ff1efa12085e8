"""Every setting is a documented row of the README's settings table."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fieldline.config import Settings

README = Path(__file__).parent.parent / "README.md"


def variable(name: str) -> str:
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else f"FIELDLINE_{name.upper()}"


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_setting_has_a_readme_row(name: str) -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `")]
    assert any(row.startswith(f"| `{variable(name)}` |") for row in rows), (
        f"{variable(name)} is missing from the README's settings table"
    )


@pytest.mark.parametrize("value", ["changeme", "secret", "<your-secret-key>", "short"])
def test_placeholder_secrets_refuse_to_start(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(secret_key=value)


def test_placeholder_admin_password_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDLINE_ADMIN_PASSWORD", "changeme")
    with pytest.raises(ValidationError):
        Settings()


def test_toml_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "fieldline.toml"
    config.write_text('http_port = 9100\nmqtt_port = 2883\ntopic_prefix = "fleet"\n')
    monkeypatch.setenv("FIELDLINE_CONFIG", str(config))
    monkeypatch.setenv("FIELDLINE_MQTT_PORT", "3883")
    settings = Settings()
    assert (settings.http_port, settings.mqtt_port, settings.topic_prefix) == (9100, 3883, "fleet")
