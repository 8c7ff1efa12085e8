"""`fieldline device`: devices managed through the HTTP API."""

from __future__ import annotations

from typing import Any

import click

from fieldline.cli.common import api_call, api_options


@click.group()
def device() -> None:
    """Manage devices through the HTTP API (so the broker learns of changes at once)."""


@device.command("create")
@click.argument("device_id")
@click.option("--name", default="")
@click.option("--type", "device_type", default="")
@click.option("--group", default=None)
@api_options
def device_create(
    device_id: str, name: str, device_type: str, group: str | None, **api: Any
) -> None:
    """Register a device and print its MQTT credentials (shown once)."""
    answer = api_call(
        **api,
        method="POST",
        path="/api/v1/devices",
        json={"device_id": device_id, "name": name, "device_type": device_type, "group": group},
    )
    mqtt = answer["mqtt"]
    click.echo(
        f"device {device_id} created\n  MQTT username  {mqtt['username']}\n"
        f"  MQTT password  {mqtt['password']}   (shown only now)\n"
        f"  broker         {mqtt['host']}:{mqtt['port']}"
    )


@device.command("list")
@click.option("--group", default=None)
@api_options
def device_list(group: str | None, **api: Any) -> None:
    """List devices with their status."""
    cursor: str | None = None
    click.echo(f"{'DEVICE':<32} {'STATUS':<11} {'ENABLED':<8} {'GROUP':<16} LAST SEEN")
    while True:
        params: dict[str, Any] = {
            "limit": 500,
            **({"group": group} if group else {}),
            **({"cursor": cursor} if cursor else {}),
        }
        page = api_call(**api, method="GET", path="/api/v1/devices", params=params)
        for d in page["items"]:
            click.echo(
                f"{d['device_id']:<32} {d['status']:<11} {d['enabled']!s:<8} "
                f"{d['group'] or '-':<16} {d['last_seen'] or 'never'}"
            )
        cursor = page["next_cursor"]
        if not cursor:
            break


def _set_enabled(device_id: str, *, enabled: bool, api: dict[str, Any]) -> None:
    api_call(**api, method="PATCH", path=f"/api/v1/devices/{device_id}", json={"enabled": enabled})
    click.echo(f"device {device_id} {'enabled' if enabled else 'disabled'}")


@device.command("disable")
@click.argument("device_id")
@api_options
def device_disable(device_id: str, **api: Any) -> None:
    """Disable a device: its connection is dropped and refused from now on."""
    _set_enabled(device_id, enabled=False, api=api)


@device.command("enable")
@click.argument("device_id")
@api_options
def device_enable(device_id: str, **api: Any) -> None:
    """Enable a disabled device again."""
    _set_enabled(device_id, enabled=True, api=api)
