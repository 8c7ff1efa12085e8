"""`fieldline config`: a device's configuration through the HTTP API (SPEC §3)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import click

from fieldline.cli.common import api_call, api_options


@click.group()
def config() -> None:
    """A device's desired configuration, as the API keeps and delivers it."""


def _path(device_id: str) -> str:
    return f"/api/v1/devices/{quote(device_id, safe='')}/config"


def _show(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(state, indent=1))
        return
    synced = "in sync" if state["in_sync"] else "not yet reported by the device"
    click.echo(f"version {state['version']} ({synced})")
    click.echo(json.dumps(state["effective"], indent=2, sort_keys=True))


@config.command("get")
@click.argument("device_id")
@click.option("--json", "as_json", is_flag=True, help="The API's whole answer, for scripts.")
@api_options
def config_get(device_id: str, as_json: bool, **api: Any) -> None:
    """The configuration in effect (the group's with the device's own over it)."""
    _show(api_call(**api, method="GET", path=_path(device_id)), as_json)


def _value(text: str) -> Any:
    """`21.5`, `true`, `null`, `{"a": 1}` as JSON; anything else as the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@config.command("set")
@click.argument("device_id")
@click.argument("settings", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option(
    "--replace", is_flag=True, help="Replace the device's own object instead of merging into it."
)
@click.option("--json", "as_json", is_flag=True, help="The API's whole answer, for scripts.")
@api_options
def config_set(
    device_id: str, settings: tuple[str, ...], replace: bool, as_json: bool, **api: Any
) -> None:
    """Change keys of the device's configuration (VALUE as JSON where it parses: 21.5,
    true, null removes the key; else text) and deliver it."""
    changes: dict[str, Any] = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{setting!r} is not KEY=VALUE", param_hint="KEY=VALUE")
        changes[key] = _value(value)
    method = "PUT" if replace else "PATCH"
    _show(api_call(**api, method=method, path=_path(device_id), json={"config": changes}), as_json)
