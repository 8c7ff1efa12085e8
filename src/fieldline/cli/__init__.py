"""The `fieldline` command: every component and task is a subcommand.

One module per group of commands; each imports what it needs inside its
commands, so that `fieldline --help` and light commands load neither FastAPI
nor the runtime.
"""

from __future__ import annotations

import importlib

import click

from fieldline.bench.cli import bench
from fieldline.cli.archive import archive
from fieldline.cli.backup import backup, restore
from fieldline.cli.broker import broker
from fieldline.cli.certs import certs
from fieldline.cli.commands import command
from fieldline.cli.config import config
from fieldline.cli.devices import device
from fieldline.cli.doctor import doctor
from fieldline.cli.export import export
from fieldline.cli.firmware import firmware, rollout
from fieldline.cli.groups import group
from fieldline.cli.provisioning import provisioning_key
from fieldline.cli.run import api, ingest, migrate, up, worker
from fieldline.cli.users import user

# Commands whose modules are imported only when they run (the simulator's imports the
# HTTP and MQTT clients at once): name -> (module, attribute, the help `--help` lists).
LAZY: dict[str, tuple[str, str, str]] = {
    "simulate": (
        "fieldline.sim.command",
        "simulate",
        "Simulate a fleet of devices speaking the device contract; a load generator too.",
    ),
}


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LAZY:
            return super().get_command(ctx, cmd_name)
        module, attribute, _ = LAZY[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # As click lists them, with the lazy commands' help from LAZY instead of their modules.
        commands = [
            (name, self.commands.get(name) or click.Command(name, help=LAZY[name][2]))
            for name in self.list_commands(ctx)
        ]
        shown = [(name, command) for name, command in commands if not command.hidden]
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        with formatter.section("Commands"):
            formatter.write_dl(
                [(name, command.get_short_help_str(limit)) for name, command in shown]
            )


@click.group(cls=_Commands)
@click.version_option(package_name="fieldline")
def main() -> None:
    """fieldline: a self-hosted IoT telemetry platform."""


COMMANDS = (up, api, ingest, worker, migrate, archive, backup, restore, broker, user, device)
OTHERS = (group, config, command, export, certs, provisioning_key, bench, firmware, rollout, doctor)
for entry in (*COMMANDS, *OTHERS):
    main.add_command(entry)
