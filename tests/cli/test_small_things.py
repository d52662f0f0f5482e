"""Small things people expect of a command line: its version, a note when a render stretches the field."""

import pytest


@pytest.mark.parametrize("args", [["--version"], ["version"]])
def test_version_prints_the_installed_package_version_and_exits_0(args, cli):
    from importlib.metadata import version

    assert cli(args) == (0, f"fieldlab {version('fieldlab')}\n", "")
