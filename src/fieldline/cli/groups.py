"""`fieldline group`: groups through the HTTP API (a deletion reconfigures devices)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import click

from fieldline.cli.common import all_pages, api_call, api_options


@click.group()
def group() -> None:
    """List, rename and delete groups through the HTTP API."""


def _path(name: str) -> str:
    return f"/api/v1/groups/{quote(name, safe='')}"


@group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@api_options
def group_list(as_json: bool, **api: Any) -> None:
    """List groups with their time zone and description."""
    found = all_pages(api, "/api/v1/groups")
    if as_json:
        click.echo(json.dumps(found, indent=1))
        return
    click.echo(f"{'GROUP':<24} {'TIME ZONE':<20} DESCRIPTION")
    for g in found:
        click.echo(f"{g['name']:<24} {g['timezone'] or '-':<20} {g['description'] or '-'}")


@group.command("rename")
@click.argument("name")
@click.argument("new_name")
@api_options
def group_rename(name: str, new_name: str, **api: Any) -> None:
    """Rename a group; its devices, configuration, keys, rules and silences follow."""
    api_call(**api, method="PATCH", path=_path(name), json={"name": new_name})
    click.echo(f"group {name} renamed to {new_name}")


@group.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask (for scripts).")
@api_options
def group_delete(name: str, yes: bool, **api: Any) -> None:
    """Delete a group; its devices stay, in no group, without its configuration."""
    if not yes:
        click.confirm(
            f"Delete group {name}? Its devices stay, in no group, and lose its configuration.",
            abort=True,
        )
    answer = api_call(**api, method="DELETE", path=_path(name))
    click.echo(
        f"group {name} deleted; devices now in no group: {answer['devices_ungrouped']},"
        f" of which sent a configuration without the group's: {answer['devices_versioned']}"
    )
