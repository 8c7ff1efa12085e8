"""`fieldline export`: raw points as CSV or Parquet through the HTTP API, streamed to a file
or stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

import click

from fieldline.cli.common import api_options, run


@click.command("export")
@click.option("--device", "devices", multiple=True, metavar="ID", help="Repeat for several.")
@click.option("--group", help="Every device of the group.")
@click.option("--metric", "metrics", multiple=True, help="Repeat for several; default all.")
@click.option("--from", "start", metavar="TIME", help="ISO 8601 (2026-12-01) or epoch seconds.")
@click.option("--to", "end", metavar="TIME", help="The end (not included); default now.")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["csv", "parquet"]),
    default="csv",
    show_default=True,
    help="Parquet: zstd, times as timestamp[us, UTC], values as stored.",
)
@click.option(
    "--output", "-o", type=click.Path(path_type=Path, dir_okay=False), help="Default stdout."
)
@api_options
def export(
    devices: tuple[str, ...],
    group: str | None,
    metrics: tuple[str, ...],
    start: str | None,
    end: str | None,
    file_format: str,
    output: Path | None,
    **api: Any,
) -> None:
    """Raw points with their units (time,device_id,metric,value,unit) as CSV or Parquet, any
    range, in bounded memory."""
    import httpx

    from fieldline.client import ApiAccess, ApiCallError, open_client, raise_for_error

    if not devices and group is None:
        raise click.UsageError("name what to export: --device ID (repeatable) or --group NAME")
    if file_format == "parquet" and output is None and sys.stdout.isatty():
        raise click.UsageError("Parquet is binary: give -o FILE, or redirect stdout")
    params = httpx.QueryParams([("device_id", d) for d in devices]).add("format", file_format)
    for metric in metrics:
        params = params.add("metric", metric)
    for name, value in (("group", group), ("start", start), ("end", end)):
        if value is not None:
            params = params.add(name, value)
    access = ApiAccess.from_env(api["api_url"], api["username"], api["password"], api["api_key"])

    async def fetch(target: IO[bytes]) -> int:
        http = await open_client(access)
        written = 0
        try:
            async with http.stream("GET", "/api/v1/export", params=params, timeout=None) as answer:
                if not answer.is_success:
                    await answer.aread()
                    raise_for_error(answer)
                async for chunk in answer.aiter_raw():
                    target.write(chunk)
                    written += chunk.count(b"\n")
        finally:
            await http.aclose()
        return written - 1  # the header (a CSV's count; a Parquet file's is in its footer)

    try:
        if output is None:
            rows = run(fetch(sys.stdout.buffer))
        else:
            partial = output.with_name(f".{output.name}.partial")
            try:
                with partial.open("wb") as file:
                    rows = run(fetch(file))
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            partial.replace(output)  # a file that is there is whole
    except ApiCallError as exc:
        raise click.ClickException(str(exc)) from exc
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the API at {access.url}: {exc}") from exc
    if output is not None:
        if file_format == "parquet":
            import pyarrow.parquet as pq

            rows = pq.ParquetFile(output).metadata.num_rows
        click.echo(f"{rows:,} points written to {output}", err=True)
