"""The `fieldline` command group: what `--help` costs and shows."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from fieldline.cli import LAZY, main

HEAVY = ("fastapi", "uvicorn", "fieldline.runtime", "httpx", "psycopg", "pydantic_settings")


def test_the_command_group_loads_no_component() -> None:
    # A fresh interpreter: this one has imported everything already.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, fieldline.cli; print(' '.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert [name for name in HEAVY if name in loaded] == []


def test_a_lazy_command_is_listed_with_its_own_help() -> None:
    for name, (_, _, listed) in LAZY.items():
        command = main.get_command(click.Context(main), name)
        assert command is not None and command.help == listed
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "simulate          Simulate a fleet of devices speaking the device..." in result.output
