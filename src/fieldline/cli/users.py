"""`fieldline user`: users created directly in the database, for when the API is down."""

from __future__ import annotations

import getpass
import json
from collections.abc import Awaitable, Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fieldline.cli.common import data_dir_option, load, run
from fieldline.domain.users import Role

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from fieldline.config import Settings
    from fieldline.storage.db import Row

T = TypeVar("T")


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
    from fieldline.storage.errors import AlreadyExistsError

    settings = load(**overrides)
    chosen = _password(username, password, prompt="Password")

    async def create(conn: AsyncConnection[Row]) -> None:
        await users.create_user(
            conn, username=username, password=chosen, role=Role(role), actor=None
        )

    try:
        run(_in_database(settings, "user create", create))
    except AlreadyExistsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"user {username} created with role {role}")


async def _in_database(
    settings: Settings, command: str, work: Callable[[AsyncConnection[Row]], Awaitable[T]]
) -> T:
    """`work` on a connection to the database `up` uses (also while it runs), migrated."""
    from fieldline.storage.db import open_pool
    from fieldline.storage.embedded import database
    from fieldline.storage.migrate import migrate as apply_migrations

    async with database(settings, command=command) as db:
        await apply_migrations(db.url)
        pool = await open_pool(db.url, min_size=1, max_size=1)
        try:
            async with pool.connection() as conn:
                return await work(conn)
        finally:
            await pool.close()


def _password(username: str, given: str | None, *, prompt: str = "New password") -> str:
    from fieldline import users

    password = given if given is not None else getpass.getpass(f"{prompt} for {username}: ")
    try:
        users.check_password(password)  # before the database is even opened
    except users.WeakPasswordError as exc:
        raise click.ClickException(str(exc)) from exc
    return password


@user.command("passwd")
@click.argument("username")
@click.option(
    "--password",
    envvar="FIELDLINE_NEW_USER_PASSWORD",
    help="Prompted for when not given [FIELDLINE_NEW_USER_PASSWORD]",
)
@data_dir_option
def user_passwd(username: str, password: str | None, **overrides: Any) -> None:
    """Set a user's password (the admin's too, when it is lost); ends their sessions."""
    from fieldline.storage.errors import NotFoundError
    from fieldline.users.accounts import reset_password

    settings = load(**overrides)
    chosen = _password(username, password)

    async def change(conn: AsyncConnection[Row]) -> None:
        await reset_password(conn, username=username, password=chosen)

    try:
        run(_in_database(settings, "user passwd", change))
    except NotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"password of {username} changed; their sessions are ended")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@data_dir_option
def user_list(as_json: bool, **overrides: Any) -> None:
    """List the users and their roles."""
    from fieldline.domain.users import User
    from fieldline.storage import users as user_store

    settings = load(**overrides)

    async def every(conn: AsyncConnection[Row]) -> list[User]:
        found: list[User] = []
        cursor: str | None = None
        while True:
            page = await user_store.list_users(conn, limit=500, cursor=cursor)
            found += page.items
            if not (cursor := page.next_cursor):
                return found

    found = run(_in_database(settings, "user list", every))
    if as_json:
        rows = [
            {"username": u.username, "role": u.role.value, "created_at": u.created_at.isoformat()}
            for u in found
        ]
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'USER':<32} {'ROLE':<9} CREATED")
    for u in found:
        created = u.created_at.astimezone(UTC)
        click.echo(f"{u.username:<32} {u.role.value:<9} {created:%Y-%m-%d %H:%M} UTC")
