"""`fieldline command`: commands to devices through the HTTP API (SPEC §3)."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import click

from fieldline.cli.common import api_call, api_options

_DONE = {"succeeded", "failed", "expired"}


@click.group()
def command() -> None:
    """Commands to devices: sent at once when online, else when next online."""


@command.command("send")
@click.argument("device_id")
@click.argument("name")
@click.option("--params", default="{}", metavar="JSON", help="Arguments, a JSON object.")
@click.option("--timeout", type=float, help="Seconds the device has to answer.")
@click.option(
    "--wait", is_flag=True, help="Wait for the answer (or expiry); exit 1 unless it succeeded."
)
@click.option("--json", "as_json", is_flag=True, help="The API's whole answer, for scripts.")
@api_options
def command_send(
    device_id: str,
    name: str,
    params: str,
    timeout: float | None,
    wait: bool,
    as_json: bool,
    **api: Any,
) -> None:
    """Send NAME to a device, for example `fieldline command send pump-7 reboot`."""
    try:
        arguments = json.loads(params)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--params") from exc
    if not isinstance(arguments, dict):
        raise click.BadParameter("a JSON object, such as '{\"delay\": 5}'", param_hint="--params")
    body: dict[str, Any] = {"name": name, "params": arguments}
    if timeout is not None:
        body["timeout_seconds"] = timeout
    path = f"/api/v1/devices/{quote(device_id, safe='')}/commands"
    sent = api_call(**api, method="POST", path=path, json=body)
    if wait and sent["status"] == "pending":
        click.echo(
            f"{device_id} is offline: waiting until it is back or {sent['expires_at']}", err=True
        )
    while wait and sent["status"] not in _DONE:
        time.sleep(0.5)
        sent = api_call(**api, method="GET", path=f"{path}/{sent['command_id']}")
    if as_json:
        click.echo(json.dumps(sent, indent=1))
    else:
        click.echo(f"command {sent['command_id']} to {device_id}: {sent['status']}")
        if sent["status"] in _DONE and sent["result"] is not None:
            click.echo(json.dumps(sent["result"], indent=2))
    if wait and sent["status"] != "succeeded":
        raise SystemExit(1)
