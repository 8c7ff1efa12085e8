"""`fieldline broker`: the external broker fieldline administers, against the registry."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from fieldline.cli.common import data_dir_option, load, run

if TYPE_CHECKING:
    from fieldline.broker.base import Drift


@click.group()
def broker() -> None:
    """Inspect the external broker fieldline administers."""


@broker.command("drift")
@click.option("--fix", is_flag=True, help="Make the broker match the registry.")
@data_dir_option
def broker_drift(fix: bool, **overrides: Any) -> None:
    """Show how the broker's clients and roles differ from the device registry.

    Exits 1 when they differ (and --fix was not given), so monitoring can run it.
    """
    from fieldline.broker.base import BrokerError
    from fieldline.broker.drift import inspect as broker_inspect
    from fieldline.broker.drift import require_administered_broker
    from fieldline.broker.factory import create_broker
    from fieldline.storage import devices as device_store
    from fieldline.storage.db import open_pool
    from fieldline.storage.embedded import database

    settings = load(**overrides)

    async def compare() -> tuple[Drift, int]:
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
        drift, devices = run(compare())
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
