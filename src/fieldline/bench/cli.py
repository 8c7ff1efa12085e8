"""`fieldline bench <scenario>`: each scenario is a module of this package.

Scenarios load lazily, so that `fieldline up` never imports the benchmark's own
dependencies (psutil, matplotlib, playwright: the `bench` extra).
"""

from __future__ import annotations

import importlib

import click

# name -> (module, one-line help)
SCENARIOS: dict[str, tuple[str, str]] = {
    "ingest": (
        "ingest",
        "Sustained ingest, with the bare-subscriber ceiling and the Node-RED peer in one run.",
    ),
    "alerts": (
        "alerts",
        "Ingest without and with 1,000 alert rules; reading-to-webhook latency.",
    ),
    "latency": ("latency", "Publish-to-queryable latency percentiles at fixed rates."),
    "lifecycle": (
        "lifecycle",
        "Retention dropping old days of raw points while ingest runs at full speed.",
    ),
    "connections": ("connections", "Ramp to many concurrently connected devices."),
    "queries": ("queries", "Latest values, bucketed charts and raw pages over seeded history."),
    "embedded": ("embedded", "Sustained ingest through `fieldline up`'s in-process amqtt broker."),
    "dashboard": ("dashboard", "Time to first render of the dashboard in headless Chromium."),
    "export": (
        "export",
        "Millions of points exported as CSV and as Parquet: rows/s and the API's peak RSS.",
    ),
    "ota": (
        "ota",
        "500 devices downloading a firmware image at once; a rollout's pace over 10,000 devices.",
    ),
    "fuzz": (
        "fuzz",
        "Good, duplicate and hostile MQTT messages through `fieldline up`: do the counts add up?",
    ),
}


class _Scenarios(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SCENARIOS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SCENARIOS:
            return None
        module_name, _ = SCENARIOS[cmd_name]
        try:
            module = importlib.import_module(f"fieldline.bench.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in {"psutil", "matplotlib", "playwright"}:
                raise click.ClickException(
                    f"the benchmarks need the `bench` extra ({exc.name} is missing): "
                    "install fieldline[bench], or run from a clone with `uv run --extra bench`"
                ) from exc
            raise
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SCENARIOS[name][1]) for name in sorted(SCENARIOS)]
        with formatter.section("Scenarios"):
            formatter.write_dl(rows)


@click.group(cls=_Scenarios)
def bench() -> None:
    """Measure fieldline on this machine against real Mosquitto and PostgreSQL.

    Each scenario prints Markdown tables and writes JSON to benchmarks/results/.
    See docs/benchmarks.md.
    """
