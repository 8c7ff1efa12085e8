"""`fieldline user`: users created directly in the database, for when the API is down."""

from __future__ import annotations

import getpass
from typing import Any

import click

from fieldline.cli.common import data_dir_option, load, run
from fieldline.domain.users import Role


@click.group()
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
@data_dir_option
def user_create(username: str, role: str, password: str | None, **overrides: Any) -> None:
    """Create a user (also while `fieldline up` runs: in its database)."""
    from fieldline import users
    from fieldline.storage.db import open_pool
    from fieldline.storage.embedded import database
    from fieldline.storage.errors import AlreadyExistsError
    from fieldline.storage.migrate import migrate as apply_migrations

    settings = load(**overrides)
    if password is None:
        password = getpass.getpass(f"Password for {username}: ")
    try:
        users.check_password(password)  # before the database is even opened
    except users.WeakPasswordError as exc:
        raise click.ClickException(str(exc)) from exc

    async def create(password: str) -> None:
        async with database(settings, command="user create") as db:
            await apply_migrations(db.url)
            pool = await open_pool(db.url, min_size=1, max_size=1)
            try:
                async with pool.connection() as conn:
                    await users.create_user(
                        conn, username=username, password=password, role=Role(role), actor=None
                    )
            finally:
                await pool.close()

    try:
        run(create(password))
    except AlreadyExistsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"user {username} created with role {role}")
