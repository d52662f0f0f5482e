"""Issue 21's one config system: every command that fits, trains, edits, renders, scores or serves takes
`--config FILE`; the commands without it only print what exists, each declared here with why. A new command
is found by walking the app, so it cannot be left out of the rule by not being listed."""

import typer.main

from fieldlab.cli import register_all
from fieldlab.cli.main import app

register_all()  # every command module, not only those a command line has asked for

PRINTS_ONLY = {
    "fields": "lists the registered fields and one field's options",
    "info": "prints a field DIR's metadata",
    "store info": "prints a store's metadata",
    "capabilities": "prints the capabilities matrix",
    "version": "prints fieldlab's version",
}
"""Commands without --config: they write nothing and take no options worth a file."""


def _commands(group, prefix=""):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_command_takes_a_config_file_or_only_prints():
    found = dict(_commands(typer.main.get_command(app)))
    takes = {name for name, command in found.items()
             if any("--config" in getattr(p, "opts", ()) for p in command.params)}
    assert set(PRINTS_ONLY) <= set(found), f"declared but gone: {sorted(set(PRINTS_ONLY) - set(found))}"
    both = sorted(takes & set(PRINTS_ONLY))
    assert not both, f"declared as printing only, yet takes --config: {both}"
    missing = set(found) - takes - set(PRINTS_ONLY)
    assert not missing, f"commands without --config (give them one, or declare why in PRINTS_ONLY): {sorted(missing)}"
