"""Every setting, command and metric is documented: the README's settings and commands
tables, docs/deploy.md's metrics table."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from fieldline.cli import main
from fieldline.config import Settings
from fieldline.ops.metrics import Metrics

README = Path(__file__).parent.parent / "README.md"
DEPLOY = Path(__file__).parent.parent / "docs" / "deploy.md"


def _commands(group: click.Group, words: list[str]) -> list[list[str]]:
    """Every command's words ("device", "create"), by name only: nothing is imported."""
    found: list[list[str]] = []
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.commands.get(name)
        if isinstance(command, click.Group):
            found += _commands(command, [*words, name])
        else:
            found.append([*words, name])
    return found


def _first_cells(path: Path) -> list[str]:
    return [line.split(" | ")[0].lstrip("| ") for line in path.read_text().splitlines()
            if line.startswith("| `")]  # fmt: skip


@pytest.mark.parametrize("words", _commands(main, []), ids=" ".join)
def test_command_has_a_readme_row(words: list[str]) -> None:
    """A row names the command, subcommands of a group as `fieldline device create|list`."""
    *group, name = words
    start = "`" + " ".join(["fieldline", *group])
    assert any(
        cell.startswith(start) and name in re.split(r"[\s`|\\]+", cell.removeprefix(start))
        for cell in _first_cells(README)
    ), f"`fieldline {' '.join(words)}` is missing from the README's commands table"


def _metric_names() -> list[str]:
    metrics = Metrics()
    return [
        value._name + ("_total" if isinstance(value, Counter) else "")
        for value in vars(metrics).values()
        if isinstance(value, Counter | Gauge | Histogram)
    ]


@pytest.mark.parametrize("name", _metric_names())
def test_metric_has_a_row_in_deploy_md(name: str) -> None:
    assert f"`{name}`" in _first_cells(DEPLOY), f"{name} is missing from docs/deploy.md's metrics"


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
