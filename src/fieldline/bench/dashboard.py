"""Scenario `dashboard`: time to first render of the dashboard in headless Chromium.

The stack of `queries` (PostgreSQL, Mosquitto, `fieldline api` serving the dashboard)
is seeded with `queries.seed`: a registry of 10,000 devices with latest values, one of
which (`bench-long`) has 30 days of history at 10 s for each of its 5 metrics.
Debian's Chromium, driven by Playwright (never Playwright's own browser download),
then opens two pages as the admin, signed in beforehand through the API:

- the overview (`#/`), rendered once the devices table shows its first page of rows
  and the fleet stream has filled the stats cards;
- the chart device's page over 30 days (`#/devices/bench-long?range=30d`), rendered
  once every chart (one per metric) has its points.

The time is measured in the page: a script added before the dashboard's own runs a
MutationObserver that notes `performance.now()` (milliseconds from navigation start)
when the page's condition first holds, then the time of the task after the next
frame (once it is painted). Each repetition opens a fresh browser context, as a user
opening the dashboard for the first time (cold: empty HTTP cache), then the same page
in a new tab of that context (warm: every asset revalidated, answered 304). A load of
each page right after the API started comes first and is not counted.

What a load asked for, and when, comes from the page's Resource Timing entries; the
event streams, which have no entry while they are open, from Chromium's DevTools
protocol, and so does the browser's own work (the renderer's main-thread time, CPU,
script, style and layout: the Performance domain's metrics). Then the same API
requests are timed from Python, one at a time, without the browser: the API's own
share. Every answer is checked against what was seeded (10,000 devices in the pager,
a chart per metric with the points 30 days hold), and the run fails if a page does
not render.

The parts: `dashboard_pages` (the pages, their render conditions and the in-page
timing script), `dashboard_browser` (driving Chromium, one load at a time),
`dashboard_load` (what a load measured), `dashboard_api` (the session, and the
requests without a browser), `dashboard_checks` (against what was seeded) and
`dashboard_tables` (the tables and notes).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
import psycopg

from fieldline.bench.dashboard_api import server_times
from fieldline.bench.dashboard_browser import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    VIEWPORT,
    chromium_version,
    measure,
)
from fieldline.bench.dashboard_checks import check_loads
from fieldline.bench.dashboard_pages import (
    CHART_RANGE,
    COMPARE_DEVICES,
    MAP_DEVICES,
    MAP_GROUP,
    dashboard_digest,
)
from fieldline.bench.dashboard_tables import (
    api_table,
    browser_table,
    notes,
    phases_table,
    render_table,
    server_table,
)
from fieldline.bench.queries import LONG_DEVICE, METRICS, Scale, Seeded, fleet_ids, seed
from fieldline.bench.report import Result, Table, publish
from fieldline.bench.stack import running_stack


@dataclass(frozen=True, slots=True)
class Options:
    devices: int = 10_000  # in the registry, the chart device included
    days: int = 30  # the chart device's history
    interval: int = 10  # seconds between its readings
    repetitions: int = 5
    timeout: float = 60.0  # seconds a page may take to render before the run fails
    postgres_bin: Path | None = None

    @property
    def scale(self) -> Scale:
        # The fleet of `queries.Scale` plus its long device: devices - 1 + 1. The long
        # device gets its days of history; the compare view's devices (the fleet's first)
        # a day at about a minute; the overview reads the fleet's latest values.
        return Scale(
            devices=self.devices - 1,
            history_devices=min(COMPARE_DEVICES, self.devices - 1),
            history_days=1,
            history_interval=self.interval * max(1, round(60 / self.interval)),
            long_days=self.days,
            long_interval=self.interval,
        )

    def check(self) -> None:
        if self.devices < MAP_DEVICES + 1:
            raise click.BadParameter(
                f"--devices must be at least {MAP_DEVICES + 1} (the map group and the chart device)"
            )
        if self.days < 1 or self.interval < 1 or self.repetitions < 1:
            raise click.BadParameter("--days, --interval and --repetitions must be positive")
        if not CHROMIUM.exists():
            raise click.ClickException(f"{CHROMIUM} is missing: install Debian's chromium")


DEFAULT = Options()


async def run(directory: Path, options: Options) -> Result:
    options.check()
    scale = options.scale
    scale.check()
    result = Result(
        "dashboard",
        {
            "devices": options.devices,
            "chart_device": LONG_DEVICE,
            "days": options.days,
            "interval_s": options.interval,
            "repetitions": options.repetitions,
            "chart_range": CHART_RANGE,
            "viewport": VIEWPORT,
            "chromium_flags": CHROMIUM_FLAGS,
            "dashboard_sha256": dashboard_digest(),
        },
    )
    async with running_stack(directory, postgres_bin=options.postgres_bin) as stack:
        seeded = await seed(stack.database_url, scale, now=datetime.now(UTC))
        await seed_map_group(stack.database_url, fleet_ids(MAP_DEVICES))
        browser_version = await chromium_version()
        load_before = os.getloadavg()
        loads = await measure(
            stack.deployment.api_url, repetitions=options.repetitions, timeout=options.timeout
        )
        load_after = os.getloadavg()
        server = await server_times(stack.deployment.api_url, seeded.end, options.repetitions)
    result.machine["chromium"] = browser_version
    checks = check_loads(loads, devices=options.devices, days=options.days)
    result.tables.append(_seed_table(options, seeded))
    result.tables.append(render_table(loads))
    result.tables.append(phases_table(loads))
    result.tables.append(browser_table(loads))
    result.tables.append(api_table(loads))
    result.tables.append(server_table(server))
    result.data = {
        "seeded": {**asdict(seeded), "end": seeded.end.isoformat()},
        "loads": [asdict(load) for load in loads],
        "server_ms": server,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    result.notes += [*checks, *notes(loads)]
    result.notes.append(
        f"Load average (1, 5, 15 min) when the browser started: {_loads(load_before)};"
        f" when it ended: {_loads(load_after)}, on {os.cpu_count()} cores. Anything else"
        " running on the machine shows here, and in the times."
    )
    return result


async def seed_map_group(database_url: str, devices: list[str]) -> None:
    """The group page's and compare view's group: the fleet's first devices (those with a
    day of history among them), each with a latest position, spread over a region as a
    fleet of field sites would be."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "INSERT INTO groups (name, description) VALUES (%s, 'seeded by fieldline bench')"
                " RETURNING id",
                (MAP_GROUP,),
            )
        ).fetchone()
        assert row is not None
        await conn.execute(
            "UPDATE devices SET group_id = %s WHERE device_id = ANY(%s)", (row[0], devices)
        )
        await conn.execute(
            "INSERT INTO telemetry_latest (device_id, metric, time, value)"
            " SELECT d, m.metric, l.time,"
            " CASE m.metric WHEN 'lat' THEN 50 + 4 * random() ELSE 4 + 8 * random() END"
            " FROM unnest(%s::text[]) AS d"
            " CROSS JOIN (VALUES ('lat'), ('lon')) AS m(metric)"
            " JOIN LATERAL (SELECT max(time) AS time FROM telemetry_latest"
            " WHERE device_id = d) l ON true",
            (devices,),
        )
        await conn.execute("VACUUM (ANALYZE) devices, telemetry_latest")


def _loads(average: tuple[float, float, float]) -> str:
    return ", ".join(f"{value:.2f}" for value in average)


def _seed_table(options: Options, seeded: Seeded) -> Table:
    table = Table("Seeded", ["what", "value"])
    table.rows += [
        ["devices in the registry, with latest values", options.devices],
        [
            f"history of the chart device ({LONG_DEVICE}, {len(METRICS)} metrics)",
            f"{options.days} d @ {options.interval} s",
        ],
        [
            f"group {MAP_GROUP}: devices with a position (group page, compare view)",
            MAP_DEVICES,
        ],
        [
            f"history of its first {options.scale.history_devices} devices (compare view)",
            f"1 d @ {options.scale.history_interval} s",
        ],
        ["points stored", seeded.points],
        ["seeding s", round(seeded.insert_seconds + seeded.vacuum_seconds, 1)],
    ]
    return table


@click.command("dashboard")
@click.option(
    "--devices",
    default=DEFAULT.devices,
    show_default=True,
    help="Devices in the registry (with latest values), the chart device included.",
)
@click.option(
    "--days", default=DEFAULT.days, show_default=True, help="History of the chart device."
)
@click.option(
    "--interval",
    default=DEFAULT.interval,
    show_default=True,
    help="Seconds between the chart device's readings.",
)
@click.option(
    "--repetitions",
    default=DEFAULT.repetitions,
    show_default=True,
    help="Fresh browser contexts per page (each a cold then a warm load).",
)
@click.option(
    "--timeout",
    default=DEFAULT.timeout,
    show_default=True,
    help="Seconds a page may take to render before the run fails.",
)
@click.option("--postgres-bin", type=click.Path(path_type=Path), help="initdb/pg_ctl directory.")
@click.option("--keep-dir", is_flag=True, help="Keep the stack's directory (logs, database).")
def command(
    devices: int,
    days: int,
    interval: int,
    repetitions: int,
    timeout: float,
    postgres_bin: Path | None,
    keep_dir: bool,
) -> None:
    """Time to first render of the dashboard in headless Chromium."""
    options = Options(devices, days, interval, repetitions, timeout, postgres_bin)
    directory = Path(tempfile.mkdtemp(prefix="fieldline-bench-"))
    try:
        result = asyncio.run(run(directory, options))
    finally:
        if keep_dir:
            click.echo(f"stack directory kept: {directory}", err=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    publish(result)
