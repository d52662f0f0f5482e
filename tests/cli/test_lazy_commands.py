"""The CLI imports only the module of the command it runs: the table that says which module that is must
name every command the modules register, and running a command must not import the others."""

import subprocess
import sys

import typer.main

from fieldlab.cli import _command_modules, register_all
from fieldlab.cli.main import app


def test_the_table_names_every_command_each_module_registers():
    register_all()
    elsewhere = {*(c.name for c in app.registered_commands if c.callback.__module__ != "fieldlab.cli.main"),
                 *(g.name for g in app.registered_groups)}
    assert elsewhere == set(_command_modules.COMMANDS)
    for name, module in _command_modules.COMMANDS.items():
        command = typer.main.get_command(app).commands[name]
        callback = getattr(command, "callback", None) or next(iter(command.commands.values())).callback
        assert callback.__module__ == f"fieldlab.cli.{module}", name


def _imported_after(args):
    code = ("import sys; from fieldlab.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('fieldlab.cli.') and m.endswith('_commands')))")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    return done.stdout.strip().splitlines()[-1]


def test_a_command_imports_its_own_module_only_and_help_imports_all():
    assert _imported_after(["fields"]) == "[]"
    assert _imported_after(["store", "info", "--help"]) == "['fieldlab.cli.dataset_commands']"
    every = _imported_after(["--help"])
    assert all(f"fieldlab.cli.{m}" in every for m in set(_command_modules.COMMANDS.values())), every
    assert _imported_after(["trian"]) == every  # a mistyped command: typer's suggestions need them all
