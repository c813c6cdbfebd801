"""The `exonta` command: a typer app with one sub-command per module."""

from __future__ import annotations

import importlib

import typer

from .. import __version__

app = typer.Typer(
    name="exonta",
    help="exonta — Nanoparticle Tracking Analysis: particle sizes and concentrations from light-sheet video.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# (command name, module under exonta.cli); each module defines `command`
COMMANDS = [
    ("analyze", "analyze"),
    ("simulate", "simulate"),
    ("calibrate", "calibrate"),
    ("batch", "batch"),
    ("report", "report"),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"exonta {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit.")) -> None:
    """exonta — Nanoparticle Tracking Analysis."""


def _register() -> None:
    for name, module in COMMANDS:
        app.command(name)(importlib.import_module(f"exonta.cli.{module}").command)


_register()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
