"""The `fieldline` command: every component and task is a subcommand."""

from __future__ import annotations

import asyncio
import functools
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx
from pydantic import ValidationError

from fieldline.bench.cli import bench
from fieldline.broker.base import BrokerError, Drift
from fieldline.broker.drift import inspect as broker_inspect
from fieldline.broker.drift import require_administered_broker
from fieldline.broker.factory import create_broker
from fieldline.client import ApiAccess, ApiCallError, call, open_client
from fieldline.config import Settings, load_settings
from fieldline.domain.users import Role
from fieldline.ops.gctune import tune_for_throughput
from fieldline.ops.logging import configure_logging
from fieldline.runtime.components import run_api, run_ingest, run_worker
from fieldline.runtime.supervisor import StartupInfo, run_platform
from fieldline.security.passwords import USER_ITERATIONS, hash_secret
from fieldline.sim.command import simulate
from fieldline.storage import devices as device_store
from fieldline.storage import users as user_store
from fieldline.storage.db import open_pool
from fieldline.storage.embedded import DatabaseUnavailable, database
from fieldline.storage.errors import AlreadyExistsError
from fieldline.storage.migrate import migrate as apply_migrations
from fieldline.storage.pgserver import PostgresServerError

T = TypeVar("T")


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise click.ClickException(f"invalid settings: {problems}") from exc
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return settings


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    try:
        return asyncio.run(main())
    except (DatabaseUnavailable, PostgresServerError) as exc:
        raise click.ClickException(str(exc)) from exc


# The embedded database of commands other than `up` (which has the same option).
_data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), help="[FIELDLINE_DATA_DIR]"
)


@click.group()
@click.version_option(package_name="fieldline")
def main() -> None:
    """fieldline: a self-hosted IoT telemetry platform."""


main.add_command(bench)


def _banner(info: StartupInfo) -> None:
    lines = [
        "",
        "fieldline is running",
        f"  Dashboard      {info.api_url}/",
        f"  API and docs   {info.api_url}/docs",
        f"  MQTT broker    {info.mqtt_host}:{info.mqtt_port}  ({info.broker})",
        *(
            [f"  MQTT over TLS  {info.mqtt_host}:{info.mqtt_tls_port}"]
            if info.mqtt_tls_port and info.mqtt_tls_port != info.mqtt_port
            else []
        ),
        f"  Database       {info.database}",
    ]
    if info.admin_password:
        lines += [
            f"  Admin user     admin / {info.admin_password}",
            "                 (shown only now; set FIELDLINE_ADMIN_PASSWORD to choose it)",
        ]
    else:
        lines.append("  Admin user     admin (password as set or printed at first start)")
    lines += [
        "",
        "Next: simulate a fleet of 10 devices in another terminal:",
        f"  fieldline simulate --create --devices 10 --api-url {info.api_url} "
        f"--mqtt-port {info.mqtt_port} --username admin --password <admin password>",
        "Or let devices register themselves with a provisioning key (zero-touch):",
        f"  fieldline provisioning-key create factory --api-url {info.api_url} "
        "--username admin --password <admin password>",
        f"  fieldline simulate --provision-key KEY_ID:SECRET --api-url {info.api_url} "
        f"--mqtt-port {info.mqtt_port}",
        "Stop with Ctrl-C.",
        "",
    ]
    click.echo("\n".join(lines))
    sys.stdout.flush()


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), help="[FIELDLINE_DATA_DIR]")
@click.option("--http-host", help="[FIELDLINE_HTTP_HOST]")
@click.option("--http-port", type=int, help="[FIELDLINE_HTTP_PORT]")
@click.option("--mqtt-port", type=int, help="[FIELDLINE_MQTT_PORT]")
@click.option(
    "--broker",
    type=click.Choice(["auto", "mosquitto", "amqtt", "external"]),
    help="[FIELDLINE_BROKER]",
)
def up(**overrides: Any) -> None:
    """Run everything: database, broker, ingest and the HTTP API."""
    settings = _settings(**overrides)
    tune_for_throughput()
    try:
        _run(run_platform(settings, on_ready=_banner))
    except BrokerError as exc:  # the broker could not start: its message says why
        raise click.ClickException(str(exc)) from exc


def _run_component(component: Callable[..., Awaitable[None]], settings: Settings) -> None:
    def ready(message: str) -> None:
        click.echo(message)
        sys.stdout.flush()

    try:
        _run(component(settings, on_ready=ready))
    except ValueError as exc:  # ConfigurationError and invalid broker settings
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--http-host", help="[FIELDLINE_HTTP_HOST]")
@click.option("--http-port", type=int, help="[FIELDLINE_HTTP_PORT]")
def api(**overrides: Any) -> None:
    """Run the HTTP API alone (production: DATABASE_URL and FIELDLINE_BROKER=external)."""
    _run_component(run_api, _settings(**overrides))


@main.command()
@click.option("--instance", "ingest_instance", help="[FIELDLINE_INGEST_INSTANCE]")
@click.option("--ops-port", type=int, help="[FIELDLINE_OPS_PORT]")
@click.option(
    "--retire",
    is_flag=True,
    help="Take this instance out for good: store what its broker session queued, then end "
    "the session (scaling down).",
)
@click.option(
    "--supervised",
    is_flag=True,
    hidden=True,
    help="Run by `fieldline up`: stop when standard input closes.",
)
def ingest(retire: bool, supervised: bool, **overrides: Any) -> None:
    """Run one ingest process; several share the uplinks through a shared subscription."""
    settings = _settings(**overrides)
    tune_for_throughput()
    _run_component(functools.partial(run_ingest, retire=retire, supervised=supervised), settings)


@main.command()
@click.option("--ops-port", type=int, help="[FIELDLINE_OPS_PORT]")
def worker(**overrides: Any) -> None:
    """Run the housekeeping worker alone (production: DATABASE_URL)."""
    _run_component(run_worker, _settings(**overrides))


@main.command()
@_data_dir_option
def migrate(**overrides: Any) -> None:
    """Apply pending database migrations (also done by `up`)."""
    settings = _settings(**overrides)

    async def run() -> None:
        async with database(settings, command="migrate") as db:
            applied = await apply_migrations(db.url)
        click.echo(f"{len(applied)} migration(s) applied" if applied else "schema is up to date")

    _run(run())


@main.group()
def broker() -> None:
    """Inspect the external broker fieldline administers."""


@broker.command("drift")
@click.option("--fix", is_flag=True, help="Make the broker match the registry.")
@_data_dir_option
def broker_drift(fix: bool, **overrides: Any) -> None:
    """Show how the broker's clients and roles differ from the device registry.

    Exits 1 when they differ (and --fix was not given), so monitoring can run it.
    """
    settings = _settings(**overrides)

    async def run() -> tuple[Drift, int]:
        async with database(settings, command="broker drift") as db:
            pool = await open_pool(db.url, min_size=1, max_size=1)
            try:
                async with pool.connection() as conn:
                    registry = await device_store.all_device_access(conn)
            finally:
                await pool.close()
        if not fix:
            return await broker_inspect(settings, registry), len(registry)
        require_administered_broker(settings)
        adapter = create_broker(settings)
        try:
            return await adapter.start(registry), len(registry)
        finally:
            await adapter.stop()

    try:
        drift, devices = _run(run())
    except (ValueError, BrokerError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if drift.clean:
        click.echo(f"the broker matches the registry ({devices} devices)")
        return
    for label, names in (
        ("missing from the broker", drift.missing),
        ("unknown to the registry", drift.unexpected),
        ("different (access or secret)", drift.changed),
    ):
        if names:
            click.echo(f"{label} ({len(names)}): {', '.join(names)}")
    if fix:
        click.echo(
            "fixed. Devices missing from the broker or with a changed secret stay refused "
            "until their credentials are rotated: the broker takes only plaintext passwords."
        )
    else:
        sys.exit(1)


@main.group()
def user() -> None:
    """Manage users directly in the database (works while the API is down)."""


@user.command("create")
@click.argument("username")
@click.option(
    "--role", type=click.Choice([r.value for r in Role]), default="viewer", show_default=True
)
@click.option(
    "--password",
    envvar="FIELDLINE_NEW_USER_PASSWORD",
    help="Prompted for when not given [FIELDLINE_NEW_USER_PASSWORD]",
)
@_data_dir_option
def user_create(username: str, role: str, password: str | None, **overrides: Any) -> None:
    """Create a user (also while `fieldline up` runs: in its database)."""
    settings = _settings(**overrides)
    if password is None:
        password = getpass.getpass(f"Password for {username}: ")
    if len(password) < 10:
        raise click.ClickException("the password must be at least 10 characters")

    async def run() -> None:
        async with database(settings, command="user create") as db:
            await apply_migrations(db.url)
            pool = await open_pool(db.url, min_size=1, max_size=1)
            try:
                async with pool.connection() as conn:
                    hashed = hash_secret(password, iterations=USER_ITERATIONS).encode()
                    await user_store.create_user(
                        conn, username=username, password_hash=hashed, role=Role(role)
                    )
            finally:
                await pool.close()

    try:
        _run(run())
    except AlreadyExistsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"user {username} created with role {role}")


def _api_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--api-key", help="[FIELDLINE_API_KEY]")(func)
    func = click.option("--password", help="[FIELDLINE_API_PASSWORD]")(func)
    func = click.option("--username", help="[FIELDLINE_API_USERNAME]")(func)
    return click.option("--api-url", help="[FIELDLINE_API_URL, default http://127.0.0.1:8000]")(
        func
    )


def _api_call(
    api_url: str | None,
    username: str | None,
    password: str | None,
    api_key: str | None,
    method: str,
    path: str,
    **kwargs: Any,
) -> Any:
    access = ApiAccess.from_env(api_url, username, password, api_key)

    async def run() -> Any:
        http = await open_client(access)
        try:
            return await call(http, method, path, **kwargs)
        finally:
            await http.aclose()

    try:
        return _run(run())
    except ApiCallError as exc:
        raise click.ClickException(str(exc)) from exc
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the API at {access.url}: {exc}") from exc


@main.group()
def device() -> None:
    """Manage devices through the HTTP API (so the broker learns of changes at once)."""


@device.command("create")
@click.argument("device_id")
@click.option("--name", default="")
@click.option("--type", "device_type", default="")
@click.option("--group", default=None)
@_api_options
def device_create(
    device_id: str, name: str, device_type: str, group: str | None, **api: Any
) -> None:
    """Register a device and print its MQTT credentials (shown once)."""
    answer = _api_call(
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
@_api_options
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
        page = _api_call(**api, method="GET", path="/api/v1/devices", params=params)
        for d in page["items"]:
            click.echo(
                f"{d['device_id']:<32} {d['status']:<11} {d['enabled']!s:<8} "
                f"{d['group'] or '-':<16} {d['last_seen'] or 'never'}"
            )
        cursor = page["next_cursor"]
        if not cursor:
            break


def _set_enabled(device_id: str, *, enabled: bool, api: dict[str, Any]) -> None:
    _api_call(**api, method="PATCH", path=f"/api/v1/devices/{device_id}", json={"enabled": enabled})
    click.echo(f"device {device_id} {'enabled' if enabled else 'disabled'}")


@device.command("disable")
@click.argument("device_id")
@_api_options
def device_disable(device_id: str, **api: Any) -> None:
    """Disable a device: its connection is dropped and refused from now on."""
    _set_enabled(device_id, enabled=False, api=api)


@device.command("enable")
@click.argument("device_id")
@_api_options
def device_enable(device_id: str, **api: Any) -> None:
    """Enable a disabled device again."""
    _set_enabled(device_id, enabled=True, api=api)


@main.command()
@click.option(
    "--san",
    "names",
    multiple=True,
    metavar="NAME",
    help="A DNS name or IP address devices reach the broker at, added to localhost, "
    "127.0.0.1, ::1, this machine's hostname and the configured MQTT hosts (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write to [default: <FIELDLINE_DATA_DIR>/certs]",
)
@click.option("--key-type", type=click.Choice(["ecdsa", "rsa"]), default="ecdsa", show_default=True)
@click.option(
    "--force",
    is_flag=True,
    help="Also replace an existing CA: every device must then be given the new ca.crt.",
)
def certs(names: tuple[str, ...], out: Path | None, key_type: str, force: bool) -> None:
    """Create a CA and the MQTT broker's TLS certificate signed by it.

    Run again to renew the server certificate or change its names: an existing CA
    is kept, as devices trust it, unless --force is given.
    """
    from fieldline.security.certs import (
        WILDCARD_HOSTS,
        CertificateAuthorityError,
        default_names,
        issue_certificates,
    )

    settings = _settings()
    configured = [settings.mqtt_host, settings.advertised_mqtt_host]
    wanted = [*default_names(), *(h for h in configured if h not in WILDCARD_HOSTS), *names]
    try:
        issued = issue_certificates(
            out or settings.data_dir / "certs",
            names=wanted,
            key_type="rsa" if key_type == "rsa" else "ecdsa",
            force=force,
        )
    except (ValueError, CertificateAuthorityError) as exc:
        raise click.ClickException(str(exc)) from exc
    files = issued.files
    state = "created" if issued.ca_created else "kept (already there)"
    lines = [
        f"CA certificate      {files.ca_cert}  {state}",
        f"CA key              {files.ca_key}  (keep private: it can sign for any name)",
        f"server certificate  {files.server_cert}  valid until {issued.server_expires:%Y-%m-%d}",
        f"server key          {files.server_key}",
        f"names               {', '.join(issued.names)}",
        f"CA fingerprint      SHA256 {issued.ca_fingerprint}",
    ]
    if issued.ca_created and force:
        lines.append("The CA is new: give every device the new ca.crt.")
    if settings.mqtt_tls_port is None:
        lines.append("Set FIELDLINE_MQTT_TLS_PORT (8883 is usual) to serve MQTT over TLS.")
    else:
        lines.append("Restart fieldline for the broker to serve the new certificate.")
    click.echo("\n".join(lines))


@main.group("provisioning-key")
def provisioning_key() -> None:
    """Provisioning keys devices register themselves with (through the API)."""


@provisioning_key.command("create")
@click.argument("name")
@click.option("--group", default=None, help="Devices provisioned with the key join this group.")
@click.option("--device-type", default=None, help="Devices provisioned get this type.")
@click.option("--max-uses", type=click.IntRange(min=1), default=None)
@click.option("--expires-at", default=None, help="ISO 8601, e.g. 2027-01-31T00:00:00Z")
@_api_options
def provisioning_key_create(
    name: str,
    group: str | None,
    device_type: str | None,
    max_uses: int | None,
    expires_at: str | None,
    **api: Any,
) -> None:
    """Create a key; its secret is printed only now (flash KEY_ID:SECRET into devices)."""
    answer = _api_call(
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
    click.echo(
        f"provisioning key {answer['key_id']} created\n"
        f"  secret   {answer['secret']}   (shown only now)\n"
        f"  devices  fieldline simulate --provision-key {answer['key_id']}:{answer['secret']}"
    )


@provisioning_key.command("list")
@_api_options
def provisioning_key_list(**api: Any) -> None:
    """List keys with their use counts and state."""
    click.echo(f"{'KEY':<28} {'NAME':<20} {'STATE':<10} {'USES':<10} GROUP")
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = _api_call(**api, method="GET", path="/api/v1/provisioning-keys", params=params)
        for key in page["items"]:
            uses = f"{key['uses']}/{key['max_uses']}" if key["max_uses"] else str(key["uses"])
            click.echo(
                f"{key['key_id']:<28} {key['name']:<20} {key['state']:<10} {uses:<10} "
                f"{key['group'] or '-'}"
            )
        cursor = page["next_cursor"]
        if not cursor:
            break


@provisioning_key.command("revoke")
@click.argument("key_id")
@_api_options
def provisioning_key_revoke(key_id: str, **api: Any) -> None:
    """Revoke a key: devices can no longer provision with it (existing devices keep working)."""
    _api_call(**api, method="DELETE", path=f"/api/v1/provisioning-keys/{key_id}")
    click.echo(f"provisioning key {key_id} revoked")


main.add_command(simulate)
