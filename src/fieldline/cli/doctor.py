"""`fieldline doctor`: check this installation and say what to fix."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from fieldline.cli.common import data_dir_option, run

if TYPE_CHECKING:
    from fieldline.ops.doctor import Finding

_MARKS = {"ok": "ok", "warning": "WARN", "problem": "PROBLEM", "skipped": "skipped"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@data_dir_option
def doctor(as_json: bool, **overrides: Any) -> None:
    """Check settings, ports, database, migrations, broker, certificates, disk and clock.

    Prints a line per check and what to fix; exits 1 when any check found a problem.
    Run it first, and again after every change.
    """
    from fieldline.config import LogFormat
    from fieldline.ops.doctor import Status, check_settings, diagnose, healthy, summary
    from fieldline.ops.logging import configure_logging

    findings, settings = check_settings(**overrides)
    if settings is not None:
        # The checks' own servers (an embedded database started for the while) log only
        # what goes wrong; the findings say the rest.
        configure_logging(level="WARNING", fmt=LogFormat.AUTO)
        findings += run(diagnose(settings))
    counts = summary(findings)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": healthy(findings),
                    "counts": {status.value: n for status, n in counts.items()},
                    "checks": [_as_dict(finding) for finding in findings],
                },
                indent=1,
            )
        )
    else:
        _print(findings)
        tally = ", ".join(f"{n} {status.value}" for status, n in counts.items() if n)
        if counts[Status.PROBLEM]:
            click.echo(f"\n{tally}: fix the problems above, then run `fieldline doctor` again")
        else:
            click.echo(f"\n{tally}: nothing stops fieldline")
    if not healthy(findings):
        sys.exit(1)


def _as_dict(finding: Finding) -> dict[str, str]:
    return {
        "check": finding.check,
        "status": finding.status.value,
        "found": finding.found,
        "fix": finding.fix,
    }


def _print(findings: list[Finding]) -> None:
    width = max(len(f.check) for f in findings)
    for finding in findings:
        mark = _MARKS[finding.status.value]
        click.echo(f"{mark:<8} {finding.check:<{width}}  {finding.found}")
        if finding.fix and finding.status.value in ("warning", "problem"):
            click.echo(f"{'':<8} {'':<{width}}  → {finding.fix}")
