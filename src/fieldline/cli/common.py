"""What several commands share: settings, running a coroutine, the API options.

Heavy modules (pydantic settings, the database, httpx) are imported inside the
functions, so that `fieldline --help` and commands that do not need them stay fast.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from fieldline.config import Settings

T = TypeVar("T")


def load(**overrides: Any) -> Settings:
    """The command's settings (environment, file, options), with logging configured."""
    from pydantic import ValidationError

    from fieldline.config import load_settings, settings_problems
    from fieldline.ops.logging import configure_logging

    try:
        settings = load_settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(settings_problems(exc))
        raise click.ClickException(f"invalid settings: {problems}") from exc
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return settings


def run(coro: Awaitable[T]) -> T:
    """Run `coro` to its end; a database that cannot start is the command's error."""
    import asyncio

    import psycopg

    from fieldline.storage.embedded import DatabaseUnavailable
    from fieldline.storage.pgserver import PostgresServerError

    async def main() -> T:
        return await coro

    try:
        return asyncio.run(main())
    except (DatabaseUnavailable, PostgresServerError) as exc:
        raise click.ClickException(str(exc)) from exc
    except psycopg.OperationalError as exc:
        # DATABASE_URL names a server that is down, unreachable or refuses the login.
        reason = " ".join(str(exc).split())
        raise click.ClickException(f"cannot reach the database: {reason}") from exc


def human_size(count: float) -> str:
    """12_345_678 → "12.3 MB": powers of 1000, as disks are sold (the dashboard's too)."""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:,.1f} TB"


def all_pages(api: dict[str, Any], path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged list endpoint (`items`, `next_cursor`), 500 at a time."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"limit": 500, **params, **({"cursor": cursor} if cursor else {})}
        page = api_call(**api, method="GET", path=path, params=query)
        found += page["items"]
        if not (cursor := page["next_cursor"]):
            return found


# The embedded database of commands other than `up` (which has the same option).
data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), help="[FIELDLINE_DATA_DIR]"
)


def api_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """How a command that works through the HTTP API reaches it."""
    func = click.option("--api-key", help="[FIELDLINE_API_KEY]")(func)
    func = click.option("--password", help="[FIELDLINE_API_PASSWORD]")(func)
    func = click.option("--username", help="[FIELDLINE_API_USERNAME]")(func)
    return click.option("--api-url", help="[FIELDLINE_API_URL, default http://127.0.0.1:8000]")(
        func
    )


def api_call(
    api_url: str | None,
    username: str | None,
    password: str | None,
    api_key: str | None,
    method: str,
    path: str,
    **kwargs: Any,
) -> Any:
    """One API request with the `api_options`; its error is the command's error."""
    import httpx

    from fieldline.client import ApiAccess, ApiCallError, call, open_client

    access = ApiAccess.from_env(api_url, username, password, api_key)

    async def request() -> Any:
        http = await open_client(access)
        try:
            return await call(http, method, path, **kwargs)
        finally:
            await http.aclose()

    try:
        return run(request())
    except ApiCallError as exc:
        raise click.ClickException(str(exc)) from exc
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the API at {access.url}: {exc}") from exc
