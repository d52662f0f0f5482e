"""Small things people expect of a command line: its version, a note when a render stretches the field."""

import pytest


@pytest.mark.parametrize("args", [["--version"], ["version"]])
def test_version_prints_the_installed_package_version_and_exits_0(args, cli):
    from importlib.metadata import version

    assert cli(args) == (0, f"fieldlab {version('fieldlab')}\n", "")


def test_a_render_size_that_changes_the_aspect_ratio_logs_one_note(cli, tmp_path, one_thread):
    status, _, err = cli(["fit", "sample:camera", "--max-size", 16, "--steps", 2, "--hidden-dim", 8, "--quiet",
                          "--out", tmp_path / "f"])
    assert status == 0, err
    status, _, err = cli(["render", tmp_path / "f", "--size", 32, 32, "--out", tmp_path / "same.png"])
    assert status == 0 and "aspect" not in err
    status, _, err = cli(["render", tmp_path / "f", "--size", 16, 40, "--out", tmp_path / "wide.png"])
    assert status == 0, err
    assert [line for line in err.splitlines() if "aspect" in line] == [
        "fieldlab: --size 16x40 changes the aspect ratio of 16:16 to 16:40: the render is stretched"]
