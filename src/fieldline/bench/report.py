"""What every benchmark scenario hands back: tables to print, and JSON to keep.

A `Result` is printed as Markdown tables (ready to paste into docs/benchmarks.md)
and written as JSON, with the machine it ran on and the exact command, to
`benchmarks/results/<scenario>-<UTC time>.json`.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

RESULTS_DIR = Path("benchmarks/results")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [
            f"**{self.title}**",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "---|" * len(self.columns),
        ]
        lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Result:
    scenario: str
    params: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    # Raw numbers for plots and later comparison (time series, latency samples...).
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    command: str = field(default_factory=lambda: shlex.join(["fieldline", *sys.argv[1:]]))
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    machine: dict[str, Any] = field(default_factory=lambda: machine())  # noqa: PLW0108 -- defined below

    def markdown(self) -> str:
        parts = [f"### {self.scenario}", "", f"`{self.command}`", ""]
        for table in self.tables:
            parts += [table.markdown(), ""]
        parts += [f"- {note}" for note in self.notes]
        return "\n".join(parts).rstrip() + "\n"

    def save(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = self.started_at.replace(":", "").replace("+0000", "Z")
        path = directory / f"{self.scenario}-{stamp}.json"
        path.write_bytes(orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))
        return path


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of values sorted ascending: the smallest value with at
    least `fraction` of all values at or below it (so p99 of 100 values is the 99th, never
    an interpolation between two). NaN when there are none. Every benchmark's p50/p95/p99
    comes from here, so their tables compare."""
    if not sorted_values:
        return float("nan")
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def machine() -> dict[str, Any]:
    """The machine and the versions of what was measured."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = 0.0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        first = meminfo.read_text().splitlines()[0].split()
        memory_gib = round(int(first[1]) / 1024 / 1024, 1)
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "mosquitto": _version(["mosquitto", "-h"], "mosquitto version"),
        "node": _version(["node", "--version"], "v"),
    }


def _version(argv: list[str], marker: str) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    output = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in (output.stdout + output.stderr).splitlines():
        if marker in line:
            return line.strip()
    return None


def common_options(*, postgres: bool = True) -> Callable[[Callable[..., Any]], Any]:
    """Options every load scenario shares: load processes, a kept directory, settings
    for the measured fieldline processes and (for a stack it starts) PostgreSQL's binaries."""
    import click

    options = [
        click.option("--processes", default=2, show_default=True, help="Load generator processes."),
        click.option(
            "--keep", type=click.Path(path_type=Path), help="Run in (and keep) this directory."
        ),
        click.option(
            "--set",
            "settings",
            multiple=True,
            metavar="NAME=VALUE",
            help="A FIELDLINE_* setting for the measured processes, e.g. "
            "FIELDLINE_BATCH_MAX_DELAY_MS=10.",
        ),
    ]
    if postgres:
        options.append(
            click.option(
                "--postgres-bin",
                type=click.Path(path_type=Path, file_okay=False),
                help="initdb/pg_ctl directory (default: the embedded server).",
            )
        )

    def decorate(command: Callable[..., Any]) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def parse_settings(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--set NAME=VALUE` options: FIELDLINE_* settings for the measured processes."""
    settings: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("FIELDLINE_"):
            raise ValueError(f"expected FIELDLINE_NAME=VALUE, got {pair!r}")
        settings[name] = value
    return settings


def publish(result: Result, *, plot: Path | None = None, chart: str = "") -> None:
    """Print the tables, save the JSON and, when asked, draw `plots.<chart>` to `plot`."""
    import click

    click.echo(result.markdown())
    click.echo(f"results: {result.save()}")
    if plot is not None and chart:
        from fieldline.bench import plots

        getattr(plots, chart)(result, plot)
        click.echo(f"plot: {plot}")
