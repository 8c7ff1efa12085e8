"""`fieldline firmware` and `fieldline rollout`: signed images and their rollouts through
the HTTP API (docs/ota.md), for release scripts and CI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from fieldline.cli.common import all_pages, api_call, api_options


@click.group()
def firmware() -> None:
    """Upload and list signed firmware images; show the keys devices trust."""


@firmware.command("upload")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", required=True, help="The device model (a device's device_type).")
@click.option("--version", "version", required=True, help="The image's version.")
@click.option("--notes", default="", help="Release notes.")
@click.option(
    "--signature",
    help="Base64 Ed25519 signature of the manifest, made offline by a trusted key "
    "(docs/ota.md); unset: fieldline signs with its own key.",
)
@click.option("--json", "as_json", is_flag=True, help="The API's answer as JSON.")
@api_options
def firmware_upload(
    image: Path,
    model: str,
    version: str,
    notes: str,
    signature: str | None,
    as_json: bool,
    **api: Any,
) -> None:
    """Upload IMAGE for a model and version; fieldline answers its sha256 and signature."""
    fields = {"device_model": model, "version": version, "release_notes": notes}
    if signature:
        fields["signature"] = signature
    with image.open("rb") as file:
        answer = api_call(
            **api,
            method="POST",
            path="/api/v1/firmware",
            data=fields,
            files={"file": (image.name, file, "application/octet-stream")},
        )
    if as_json:
        click.echo(json.dumps(answer, indent=1))
        return
    click.echo(
        f"firmware {answer['version']} of {answer['device_model']} stored:"
        f" {answer['size_bytes']} bytes, sha256 {answer['sha256']}, signed by key"
        f" {answer['key_id']}"
    )


@firmware.command("list")
@click.option("--model", help="Only this device model.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@api_options
def firmware_list(model: str | None, as_json: bool, **api: Any) -> None:
    """Images, newest first within each model."""
    params = {"device_model": model} if model else {}
    items = all_pages(api, "/api/v1/firmware", **params)
    if as_json:
        click.echo(json.dumps(items, indent=1))
        return
    click.echo(f"{'MODEL':<20} {'VERSION':<14} {'BYTES':>10} {'SHA256':<16} {'KEY':<16} UPLOADED")
    for i in items:
        click.echo(
            f"{i['device_model']:<20} {i['version']:<14} {i['size_bytes']:>10}"
            f" {i['sha256'][:16]:<16} {i['key_id']:<16} {i['uploaded_at']}"
        )


@firmware.command("keys")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@api_options
def firmware_keys(as_json: bool, **api: Any) -> None:
    """The public keys devices verify images with; the active one signs new images."""
    items = api_call(**api, method="GET", path="/api/v1/firmware/keys")["items"]
    if as_json:
        click.echo(json.dumps(items, indent=1))
        return
    for key in items:
        click.echo(f"{key['key_id']}  {key['public_key']}{'  active' if key['active'] else ''}")


@click.group()
def rollout() -> None:
    """Roll an image out in stages; follow, pause, resume, raise and cancel rollouts."""


def _stage(text: str) -> dict[str, Any]:
    """`5` (devices), `25%`, or either with `@SECONDS` after the previous stage began."""
    share, _, after = text.partition("@")
    try:
        stage: dict[str, Any] = (
            {"percentage": float(share[:-1])} if share.endswith("%") else {"devices": int(share)}
        )
        if after:
            stage["after_seconds"] = int(after)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: a stage is N, N% or either @SECONDS") from exc
    return stage


@rollout.command("create")
@click.option("--model", required=True, help="The device model.")
@click.option("--version", "version", required=True, help="The version to install.")
@click.option("--group", "groups", multiple=True, help="A targeted group (repeat for more).")
@click.option("--device", "devices", multiple=True, help="A targeted device (repeat for more).")
@click.option("--percentage", type=float, help="One stage: this share, raised by hand later.")
@click.option(
    "--stage",
    "stages",
    multiple=True,
    help="A stage, in order: N devices (a canary) or N%, with @SECONDS after the previous "
    "one began; e.g. --stage 5 --stage 25%@3600 --stage 100%@86400.",
)
@click.option("--max-per-minute", type=int, default=60, show_default=True)
@click.option("--device-timeout", type=int, default=3600, show_default=True, help="Seconds.")
@click.option("--settle", type=int, default=300, show_default=True, help="Seconds.")
@click.option("--abort-min-finished", type=int, default=5, show_default=True)
@click.option("--abort-failure-percent", type=float, default=20, show_default=True)
@click.option("--allow-downgrade", is_flag=True)
@click.option("--json", "as_json", is_flag=True, help="The API's answer as JSON.")
@api_options
def rollout_create(
    model: str,
    version: str,
    groups: tuple[str, ...],
    devices: tuple[str, ...],
    percentage: float | None,
    stages: tuple[str, ...],
    max_per_minute: int,
    device_timeout: int,
    settle: int,
    abort_min_finished: int,
    abort_failure_percent: float,
    allow_downgrade: bool,
    as_json: bool,
    **api: Any,
) -> None:
    """Start a rollout (give --percentage or --stage)."""
    body: dict[str, Any] = {
        "firmware": {"device_model": model, "version": version},
        "target": {"groups": list(groups), "device_ids": list(devices)},
        "max_per_minute": max_per_minute,
        "device_timeout_seconds": device_timeout,
        "settle_seconds": settle,
        "abort": {"min_finished": abort_min_finished, "failure_percent": abort_failure_percent},
        "allow_downgrade": allow_downgrade,
    }
    if stages:
        body["stages"] = [_stage(text) for text in stages]
    if percentage is not None:
        body["percentage"] = percentage
    preview = api_call(**api, method="POST", path="/api/v1/rollouts/preview", json=body)
    answer = api_call(**api, method="POST", path="/api/v1/rollouts", json=body)
    if as_json:
        click.echo(json.dumps(answer, indent=1))
        return
    click.echo(
        f"rollout {answer['id']} of {model} {version} started: {preview['targeted']} devices"
        f" targeted ({preview['already_on_version']} on it already)"
    )


@rollout.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@api_options
def rollout_list(as_json: bool, **api: Any) -> None:
    """Rollouts, newest first, with their devices per state."""
    items = all_pages(api, "/api/v1/rollouts")
    if as_json:
        click.echo(json.dumps(items, indent=1))
        return
    for r in items:
        click.echo(f"{r['id']:>5}  {r['state']:<10} {_firmware(r):<28} {_counts(r['counts'])}")


def _firmware(rollout: dict[str, Any]) -> str:
    return f"{rollout['firmware']['device_model']} {rollout['firmware']['version']}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in counts.items() if n) or "no device yet"


@rollout.command("show")
@click.argument("rollout_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="The rollout and its devices as JSON.")
@api_options
def rollout_show(rollout_id: int, as_json: bool, **api: Any) -> None:
    """A rollout: its state, why it paused, its counts and its failures."""
    r = api_call(**api, method="GET", path=f"/api/v1/rollouts/{rollout_id}")
    if as_json:
        click.echo(json.dumps(r, indent=1))
        return
    click.echo(f"rollout {r['id']}: {_firmware(r)}, {r['state']}")
    if r["pause_reason"]:
        click.echo(f"paused: {r['pause_reason']}")
    click.echo(f"devices: {_counts(r['counts'])}")
    for d in r["devices"]:
        if d["error"]:
            click.echo(f"  {d['device_id']}: {d['state']}: {d['error']}")


def _change(rollout_id: int, body: dict[str, Any], api: dict[str, Any]) -> None:
    r = api_call(
        **api, method="PATCH", path=f"/api/v1/rollouts/{quote(str(rollout_id))}", json=body
    )
    click.echo(f"rollout {r['id']}: {r['state']}; devices: {_counts(r['counts'])}")


@rollout.command("pause")
@click.argument("rollout_id", type=int)
@api_options
def rollout_pause(rollout_id: int, **api: Any) -> None:
    """Tell no further device; those updating go on."""
    _change(rollout_id, {"action": "pause"}, api)


@rollout.command("resume")
@click.argument("rollout_id", type=int)
@api_options
def rollout_resume(rollout_id: int, **api: Any) -> None:
    """Go on; the abort criteria count devices finishing from now."""
    _change(rollout_id, {"action": "resume"}, api)


@rollout.command("cancel")
@click.argument("rollout_id", type=int)
@api_options
def rollout_cancel(rollout_id: int, **api: Any) -> None:
    """Stop for good; devices not finished are cancelled and their offers taken back."""
    _change(rollout_id, {"action": "cancel"}, api)


@rollout.command("raise")
@click.argument("rollout_id", type=int)
@click.argument("percentage", type=float)
@api_options
def rollout_raise(rollout_id: int, percentage: float, **api: Any) -> None:
    """Let in at least PERCENTAGE of the target now."""
    _change(rollout_id, {"percentage": percentage}, api)
