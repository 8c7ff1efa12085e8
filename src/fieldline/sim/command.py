"""`fieldline simulate`: run a simulated device fleet against a broker (and the API)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from fieldline.client import ApiAccess
from fieldline.sim.fleet import run_fleet
from fieldline.sim.options import FleetOptions, MqttVersion
from fieldline.sim.payloads import DEVICE_TYPE, FIRMWARE_VERSION
from fieldline.sim.provisioning import ProvisioningError
from fieldline.sim.report import FleetProgress, SimulationReport


@click.command("simulate")
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Number of simulated devices.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Telemetry messages per second per device.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds to publish for; default: until Ctrl-C.",
)
@click.option("--qos", type=click.IntRange(0, 1), default=1, show_default=True)
@click.option(
    "--mqtt-host",
    envvar="FIELDLINE_MQTT_HOST",
    default="127.0.0.1",
    show_default=True,
    show_envvar=True,
)
@click.option(
    "--mqtt-port",
    envvar="FIELDLINE_MQTT_PORT",
    type=click.IntRange(1, 65535),
    default=1883,
    show_default=True,
    show_envvar=True,
)
@click.option(
    "--mqtt-version",
    type=click.Choice([v.value for v in MqttVersion]),
    default=MqttVersion.V311.value,
    show_default=True,
    help="MQTT protocol version (the embedded amqtt broker speaks 3.1.1 only).",
)
@click.option(
    "--api-url",
    envvar="FIELDLINE_API_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    show_envvar=True,
)
@click.option(
    "--username",
    envvar="FIELDLINE_API_USERNAME",
    default=None,
    show_envvar=True,
    help="API user for --create.",
)
@click.option(
    "--password",
    envvar="FIELDLINE_API_PASSWORD",
    default=None,
    show_envvar=True,
    help="Password of --username.",
)
@click.option(
    "--api-key",
    envvar="FIELDLINE_API_KEY",
    default=None,
    show_envvar=True,
    help="API key for --create (instead of --username/--password).",
)
@click.option(
    "--create",
    is_flag=True,
    help="Register the devices through the API (rotating the password of existing ones).",
)
@click.option(
    "--provision-key",
    envvar="FIELDLINE_PROVISION_KEY",
    default=None,
    show_envvar=True,
    help="KEY_ID:SECRET of a provisioning key: each device registers itself through "
    "POST /provision (zero-touch), as factory-flashed firmware would.",
)
@click.option("--prefix", default="sim", show_default=True, help="Device ids are PREFIX-0001, ...")
@click.option("--group", default=None, help="Group the devices belong to (created with --create).")
@click.option(
    "--credentials",
    "credentials_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON file of device id → MQTT password: written by --create, read otherwise.",
)
@click.option(
    "--topic-prefix",
    envvar="FIELDLINE_TOPIC_PREFIX",
    default="devices",
    show_default=True,
    show_envvar=True,
)
@click.option(
    "--bad-every",
    type=click.IntRange(min=0),
    default=0,
    help="Every K-th message is bad: not JSON, NaN, future timestamp, spoofed "
    "device_id, oversized (cycling).",
)
@click.option(
    "--duplicate-every",
    type=click.IntRange(min=0),
    default=0,
    help="Every K-th message re-sends an earlier one with the same message_id.",
)
@click.option(
    "--batch-every",
    type=click.IntRange(min=0),
    default=0,
    help='Every K-th message is a {"readings": [...]} batch.',
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Readings per batch.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds between heartbeats.",
)
@click.option(
    "--kill",
    is_flag=True,
    help="At the end drop connections without DISCONNECT, so the broker sends each "
    "device's last will.",
)
@click.option(
    "--hot",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="The first N devices run hot: their temperature reads 20 °C above normal "
    "from --incident-after on (for alert rules to catch).",
)
@click.option(
    "--drop",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="The last N devices drop off at --incident-after: the connection closes without "
    "DISCONNECT (the broker sends the last will) and they stay silent.",
)
@click.option(
    "--incident-after",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds after the start when --hot and --drop take effect.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to spread the devices over.",
)
@click.option(
    "--connect-concurrency",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Simultaneous MQTT handshakes.",
)
@click.option("--seed", type=int, default=None, help="Seed for reproducible sensor values.")
@click.option(
    "--device-type",
    default=DEVICE_TYPE,
    show_default=True,
    help="The devices' type, registered with --create or --provision-key: the model "
    "firmware updates are for.",
)
@click.option(
    "--firmware-version",
    default=FIRMWARE_VERSION,
    show_default=True,
    help="The firmware version the devices start on.",
)
@click.option(
    "--ota-fail-percent",
    type=click.FloatRange(0, 100),
    default=0.0,
    show_default=True,
    help="Share of devices (chosen by a hash of the device id) whose firmware installs "
    'fail: they report "failed" with "flash write error".',
)
@click.option(
    "--ota-rollback-percent",
    type=click.FloatRange(0, 100),
    default=0.0,
    show_default=True,
    help="Share of devices whose new firmware fails after the reboot: they come back on "
    "their old version (a rollback).",
)
@click.option(
    "--ota-cut-percent",
    type=click.FloatRange(0, 100),
    default=0.0,
    show_default=True,
    help="Share of devices whose firmware download is cut midway once; they resume "
    "from the bytes they have.",
)
@click.option(
    "--ota-download-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds between the 64 KiB Range requests of a firmware download (a slow link).",
)
def simulate(
    *,
    devices: int,
    rate: float,
    duration: float | None,
    qos: int,
    mqtt_host: str,
    mqtt_port: int,
    mqtt_version: str,
    api_url: str,
    username: str | None,
    password: str | None,
    api_key: str | None,
    create: bool,
    provision_key: str | None,
    prefix: str,
    group: str | None,
    credentials_file: Path | None,
    topic_prefix: str,
    bad_every: int,
    duplicate_every: int,
    batch_every: int,
    batch_size: int,
    heartbeat_interval: float,
    kill: bool,
    hot: int,
    drop: int,
    incident_after: float,
    processes: int,
    connect_concurrency: int,
    seed: int | None,
    device_type: str,
    firmware_version: str,
    ota_fail_percent: float,
    ota_rollback_percent: float,
    ota_cut_percent: float,
    ota_download_delay: float,
) -> None:
    """Simulate a fleet of devices speaking the device contract; a load generator too."""
    try:
        options = FleetOptions(
            devices=devices,
            rate=rate,
            duration=duration,
            qos=qos,
            mqtt_host=mqtt_host,
            mqtt_port=mqtt_port,
            mqtt_version=MqttVersion(mqtt_version),
            prefix=prefix,
            topic_prefix=topic_prefix,
            group=group,
            bad_every=bad_every,
            duplicate_every=duplicate_every,
            batch_every=batch_every,
            batch_size=batch_size,
            heartbeat_interval=heartbeat_interval,
            kill=kill,
            hot=hot,
            drop=drop,
            incident_after=incident_after,
            api=ApiAccess(url=api_url, username=username, password=password, api_key=api_key),
            create=create,
            provision_key=provision_key,
            credentials_file=credentials_file,
            processes=processes,
            connect_concurrency=connect_concurrency,
            # A run until Ctrl-C must not grow without bound.
            record_message_ids=False,
            seed=seed,
            device_type=device_type,
            firmware_version=firmware_version,
            ota_fail_percent=ota_fail_percent,
            ota_rollback_percent=ota_rollback_percent,
            ota_cut_percent=ota_cut_percent,
            ota_download_delay=ota_download_delay,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        report = asyncio.run(_run(options))
    except ProvisioningError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report.summary(), err=True)
    if report.devices_connected == 0:
        raise click.exceptions.Exit(1)


async def _run(options: FleetOptions) -> SimulationReport:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def request_stop(signum: signal.Signals) -> None:
        click.echo("stopping: disconnecting devices (again to abort)", err=True)
        stop.set()
        # A second signal falls back to the default: abort at once.
        loop.remove_signal_handler(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, request_stop, signum)
    try:
        return await run_fleet(options, stop=stop, on_progress=_echo_progress)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _echo_progress(progress: FleetProgress) -> None:
    click.echo(progress.summary(), err=True)
