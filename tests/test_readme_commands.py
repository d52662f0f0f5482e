"""The README's commands (issue 22). CI runs a declared subset: every command is read from the README by
benchmarks/readme_commands.py (the script that times them all at their defaults, BENCHMARKS.md), names a
command fieldlab has, and the quick ones run here at their defaults; the full set takes most of an hour on a
2-core CPU, which the suite's 15 minutes cannot hold."""

import importlib.util
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = ("fieldlab fields", "fieldlab fields siren")
"""Commands run here as the README gives them: the rest are timed by benchmarks/readme_commands.py."""


def _commands() -> list[str]:
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "benchmarks" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.readme_commands(ROOT / "README.md")


def test_the_readme_commands_are_all_found_including_the_python_snippet():
    commands = _commands()
    assert len(commands) >= 30
    assert commands[0].startswith("fieldlab fit sample:astronaut")  # the quickstart, its pip install dropped
    assert sum(c.startswith("python -c ") for c in commands) == 1
    assert not any(c.startswith(("pip ", "#")) or " # " in c for c in commands)


@pytest.mark.parametrize("command", [c for c in _commands() if c.startswith(("fieldlab ", "torchrun "))])
def test_every_readme_command_names_a_fieldlab_command(command, cli):
    words = shlex.split(command)
    words = words[words.index("fieldlab") + 1:]
    sub = words[:2] if words[0] == "store" else words[:1]
    status, stdout, stderr = cli([*sub, "--help"])
    assert status == 0, stderr


@pytest.mark.parametrize("command", QUICK)
def test_the_quick_readme_commands_run_at_their_defaults(command, cli):
    assert command in _commands()
    status, stdout, stderr = cli(shlex.split(command)[1:])
    assert status == 0, stderr
    assert stdout.strip()
