"""Running fieldline: everything at once (`up`), or one component at a time."""

from __future__ import annotations

import functools
import os
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fieldline.cli.common import data_dir_option, load, run

if TYPE_CHECKING:
    from fieldline.config import Settings
    from fieldline.runtime.supervisor import StartupInfo


def _banner(settings: Settings, info: StartupInfo) -> None:
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
    lines += ["", *_hints(settings, info), "Stop with Ctrl-C.", ""]
    click.echo("\n".join(lines))
    sys.stdout.flush()


def _hints(settings: Settings, info: StartupInfo) -> list[str]:
    """Commands to paste as they stand: the URL and ports in use, and secrets read from
    where they are (never a placeholder to fill in). One `export` sets what every later
    command (and what `provisioning-key create` prints) reads from the environment."""
    data_dir = settings.data_dir.resolve()
    environment = [
        f"FIELDLINE_API_URL={shlex.quote(info.api_url)}",
        f"FIELDLINE_MQTT_PORT={info.mqtt_port}",
        "FIELDLINE_API_USERNAME=admin",
    ]
    if info.mqtt_host != "127.0.0.1":  # the simulator's default
        environment.insert(1, f"FIELDLINE_MQTT_HOST={shlex.quote(info.mqtt_host)}")
    lost = []
    if info.admin_password:  # generated now, and shown above anyway
        environment.append(f"FIELDLINE_API_PASSWORD={shlex.quote(info.admin_password)}")
    elif os.environ.get("FIELDLINE_ADMIN_PASSWORD"):
        environment.append('FIELDLINE_API_PASSWORD="$FIELDLINE_ADMIN_PASSWORD"')
    else:  # kept nowhere: the admin knows it, or sets a new one
        where = "" if settings.database_url else f" --data-dir {shlex.quote(str(data_dir))}"
        lost = [
            "  (then FIELDLINE_API_PASSWORD with the admin password; a lost one is reset by",
            f"  fieldline user passwd admin{where})",
        ]
    lines = [
        "Next, in another terminal:",
        f"  export {' '.join(environment)}",
        *lost,
        "Simulate a fleet of 10 devices:",
        "  fieldline simulate --create --devices 10",
        "Or let devices register themselves with a provisioning key (zero-touch); it prints",
        "the command that starts devices with it:",
        "  fieldline provisioning-key create factory",
    ]
    port_file = data_dir / "database.port"  # written by the embedded database's start
    if not settings.database_url and port_file.exists():
        secret = shlex.quote(str(data_dir / "secrets" / "database_reader_password"))
        lines += [
            "Read the data with SQL, read-only (and Grafana: docs/grafana.md):",
            f'  PGPASSWORD="$(cat {secret})" psql -h 127.0.0.1'
            f" -p {port_file.read_text().strip()} -U fieldline_reader fieldline",
        ]
    return lines


@click.command()
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
    from fieldline.broker.base import BrokerError
    from fieldline.ops.gctune import tune_for_throughput
    from fieldline.ota.keys import KeyConfigurationError
    from fieldline.runtime.supervisor import run_platform

    settings = load(**overrides)
    tune_for_throughput()
    try:
        run(run_platform(settings, on_ready=functools.partial(_banner, settings)))
    except (BrokerError, KeyConfigurationError) as exc:  # its message says why
        raise click.ClickException(str(exc)) from exc


def _run_component(component: Callable[..., Awaitable[None]], settings: Settings) -> None:
    def ready(message: str) -> None:
        click.echo(message)
        sys.stdout.flush()

    try:
        run(component(settings, on_ready=ready))
    except ValueError as exc:  # ConfigurationError and invalid broker settings
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.option("--http-host", help="[FIELDLINE_HTTP_HOST]")
@click.option("--http-port", type=int, help="[FIELDLINE_HTTP_PORT]")
def api(**overrides: Any) -> None:
    """Run the HTTP API alone (production: DATABASE_URL and FIELDLINE_BROKER=external)."""
    from fieldline.runtime.components import run_api

    _run_component(run_api, load(**overrides))


@click.command()
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
    from fieldline.ops.gctune import tune_for_throughput
    from fieldline.runtime.components import run_ingest

    settings = load(**overrides)
    tune_for_throughput()
    _run_component(functools.partial(run_ingest, retire=retire, supervised=supervised), settings)


@click.command()
@click.option("--ops-port", type=int, help="[FIELDLINE_OPS_PORT]")
@click.option(
    "--once", is_flag=True, help="Run every job (or --job) once, then stop; also beside `up`."
)
@click.option("--job", "job", metavar="NAME", help="With --once: only this job (e.g. retention).")
@data_dir_option
def worker(once: bool, job: str | None, **overrides: Any) -> None:
    """Run the housekeeping worker alone (production: DATABASE_URL)."""
    from fieldline.runtime.components import run_worker

    settings = load(**overrides)
    if job is not None and not once:
        raise click.UsageError("--job needs --once")
    if once:
        run(_worker_once(settings, job))
        return
    _run_component(run_worker, settings)


async def _worker_once(settings: Settings, name: str | None) -> None:
    """Each job once, in the order the worker runs them, on the database `up` would use."""
    from fieldline.ops.metrics import Metrics
    from fieldline.storage.db import open_pool
    from fieldline.storage.embedded import database
    from fieldline.storage.migrate import migrate
    from fieldline.worker.service import Worker

    async with database(settings, command="worker") as db:
        await migrate(db.url)
        pool = await open_pool(db.url, min_size=1, max_size=2, name="fieldline-worker-once")
        try:
            worker = Worker(settings=settings, pool=pool, metrics=Metrics())
            names = [job.name for job in worker.jobs]
            if name is not None and name not in names:
                raise click.UsageError(f"no job {name!r}; the jobs: {', '.join(names)}")
            for job in [name] if name else names:
                result = await worker.run_job(job)
                click.echo(f"{job}: {_job_outcome(result)}")
        finally:
            await pool.close()


def _job_outcome(result: object) -> str:
    from fieldline.storage.retention import TierRun
    from fieldline.worker.archive import ArchiveRound
    from fieldline.worker.backup import BackupRound, VerifyRound

    if result is None:
        return "skipped (another worker holds it) or failed (see the log)"
    if isinstance(result, list) and all(isinstance(run, TierRun) for run in result):
        return "; ".join(
            f"{run.tier.name} dropped {', '.join(p.name for p in run.dropped) or 'nothing'}"
            + (f" (kept until archived: {', '.join(p.name for p in run.held)})" if run.held else "")
            for run in result
        )
    if isinstance(result, ArchiveRound):
        wrote = f"wrote {len(result.written)} file(s), {result.pending} still due"
        return f"{wrote}; failed: {result.error}" if result.error else wrote
    if isinstance(result, BackupRound | VerifyRound):
        return str(result)
    return "done"


@click.command()
@data_dir_option
def migrate(**overrides: Any) -> None:
    """Apply pending database migrations (also done by `up`)."""
    from fieldline.storage.embedded import database
    from fieldline.storage.migrate import migrate as apply_migrations

    settings = load(**overrides)

    async def apply() -> None:
        async with database(settings, command="migrate") as db:
            applied = await apply_migrations(db.url)
        click.echo(f"{len(applied)} migration(s) applied" if applied else "schema is up to date")

    run(apply())
