"""`fieldline device`: devices managed through the HTTP API."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import click

from fieldline.cli.common import all_pages, api_call, api_options


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
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@api_options
def device_list(group: str | None, as_json: bool, **api: Any) -> None:
    """List devices with their status."""
    found = all_pages(api, "/api/v1/devices", **({"group": group} if group else {}))
    if as_json:
        click.echo(json.dumps(found, indent=1))
        return
    click.echo(f"{'DEVICE':<32} {'STATUS':<11} {'ENABLED':<8} {'GROUP':<16} LAST SEEN")
    for d in found:
        click.echo(
            f"{d['device_id']:<32} {d['status']:<11} {d['enabled']!s:<8} "
            f"{d['group'] or '-':<16} {d['last_seen'] or 'never'}"
        )


@device.command("show")
@click.argument("device_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@api_options
def device_show(device_id: str, as_json: bool, **api: Any) -> None:
    """A device: its registration, status and latest values."""
    path = f"/api/v1/devices/{quote(device_id, safe='')}"
    shown = api_call(**api, method="GET", path=path)
    status = api_call(**api, method="GET", path=f"{path}/status")
    latest = api_call(**api, method="GET", path=f"{path}/telemetry/latest")
    if as_json:
        click.echo(json.dumps({**shown, "status": status, "latest": latest}, indent=1))
        return
    rows = [
        ("device", shown["device_id"]),
        ("name", shown["name"] or "-"),
        ("type", shown["device_type"] or "-"),
        ("group", shown["group"] or "-"),
        ("enabled", str(shown["enabled"]).lower()),
        ("status", shown["status"]),
        ("last seen", shown["last_seen"] or "never"),
        ("firmware", status["firmware_version"] or "-"),
        ("update", "pending" if status["pending_update"] else "none pending"),
    ]
    for label, value in rows:
        click.echo(f"{label:<10} {value}")
    values = latest.get("metrics", {})
    if values:
        click.echo("latest")
        for metric, point in sorted(values.items()):
            click.echo(f"  {metric:<24} {point['value']:<14} {point['time']}")


@device.command("delete")
@click.argument("device_id")
@click.option("--yes", is_flag=True, help="Do not ask (for scripts).")
@api_options
def device_delete(device_id: str, yes: bool, **api: Any) -> None:
    """Delete a device and its credentials; its connection is dropped, its telemetry kept."""
    if not yes:
        click.confirm(
            f"Delete {device_id}? It can no longer connect; its telemetry stays.", abort=True
        )
    api_call(**api, method="DELETE", path=f"/api/v1/devices/{quote(device_id, safe='')}")
    click.echo(f"device {device_id} deleted")


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
