"""Which module registers each command that lives outside `main.py`, imported only when it is asked for.

A module registers its commands on `app` when imported. `main` imports the one module the command line names
(`register(argv)`), so `fieldlab fit` does not import what `train`, `view` or `crop` need (a fifth of the
CLI's own import time on a CPU); help, a mistyped command and anything else import all of them
(`register_all`), so the listing and typer's suggestions are complete. A new command module adds its
commands here; tests/cli/test_lazy_commands.py checks the table against what the modules register.
"""

from __future__ import annotations

import importlib

COMMANDS = {
    "fit-dataset": "dataset_commands", "store": "dataset_commands",
    "crop": "edit_commands", "extend": "edit_commands",
    "train": "learn_commands", "eval": "learn_commands", "train-sdf": "learn_commands",
    "capabilities": "capability_commands",
    "view": "view_commands",
}
"""Command (or group) name → its module in fieldlab.cli."""


def register(argv: list[str], app) -> None:
    """Import the module of the command `argv` names (its first word that is not an option); nothing more for a
    command `app` already holds (main.py's own), and every module when it names none of fieldlab's commands."""
    name = next((a for a in argv if not a.startswith("-")), None)
    if name in COMMANDS:
        importlib.import_module(f"fieldlab.cli.{COMMANDS[name]}")
    elif name not in {command.name for command in app.registered_commands}:
        register_all()


def register_all() -> None:
    """Every command module: `app` then holds every command (help, a library user's `app`)."""
    for module in dict.fromkeys(COMMANDS.values()):
        importlib.import_module(f"fieldlab.cli.{module}")
