"""`fieldline provisioning-key`: the keys devices register themselves with, through the API."""

from __future__ import annotations

import json
import shlex
from typing import Any

import click

from fieldline.cli.common import all_pages, api_call, api_options


@click.group("provisioning-key")
def provisioning_key() -> None:
    """Provisioning keys devices register themselves with (through the API)."""


@provisioning_key.command("create")
@click.argument("name")
@click.option("--group", default=None, help="Devices provisioned with the key join this group.")
@click.option("--device-type", default=None, help="Devices provisioned get this type.")
@click.option("--max-uses", type=click.IntRange(min=1), default=None)
@click.option("--expires-at", default=None, help="ISO 8601, e.g. 2027-01-31T00:00:00Z")
@api_options
def provisioning_key_create(
    name: str,
    group: str | None,
    device_type: str | None,
    max_uses: int | None,
    expires_at: str | None,
    **api: Any,
) -> None:
    """Create a key; its secret is printed only now (flash KEY_ID:SECRET into devices)."""
    from fieldline.client import ApiAccess

    answer = api_call(
        **api,
        method="POST",
        path="/api/v1/provisioning-keys",
        json={
            "name": name,
            "group": group,
            "device_type": device_type,
            "max_uses": max_uses,
            "expires_at": expires_at,
        },
    )
    url = ApiAccess.from_env(api["api_url"]).url
    key = shlex.quote(f"{answer['key_id']}:{answer['secret']}")
    click.echo(
        f"provisioning key {answer['key_id']} created\n"
        f"  secret   {answer['secret']}   (shown only now)\n"
        f"  devices  fieldline simulate --provision-key {key} --api-url {shlex.quote(url)}"
    )


@provisioning_key.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@api_options
def provisioning_key_list(as_json: bool, **api: Any) -> None:
    """List keys with their use counts and state."""
    found = all_pages(api, "/api/v1/provisioning-keys")
    if as_json:
        click.echo(json.dumps(found, indent=1))
        return
    click.echo(f"{'KEY':<28} {'NAME':<20} {'STATE':<10} {'USES':<10} GROUP")
    for key in found:
        uses = f"{key['uses']}/{key['max_uses']}" if key["max_uses"] else str(key["uses"])
        click.echo(
            f"{key['key_id']:<28} {key['name']:<20} {key['state']:<10} {uses:<10} "
            f"{key['group'] or '-'}"
        )


@provisioning_key.command("revoke")
@click.argument("key_id")
@api_options
def provisioning_key_revoke(key_id: str, **api: Any) -> None:
    """Revoke a key: devices can no longer provision with it (existing devices keep working)."""
    api_call(**api, method="DELETE", path=f"/api/v1/provisioning-keys/{key_id}")
    click.echo(f"provisioning key {key_id} revoked")
