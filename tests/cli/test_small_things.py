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


@pytest.mark.parametrize("name", ["linear.exr", "linear.dat"])
def test_a_float_exr_forced_as_an_image_keeps_its_floats(name, cli, tmp_path, one_thread):
    pytest.importorskip("OpenEXR")
    import json

    import numpy as np

    from fieldlab.signals import load_signal
    from fieldlab.signals.hdr import write_hdr_image

    raw = np.linspace(0, 4, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)  # past 1.0: no 8-bit image holds it
    write_hdr_image(tmp_path / "linear.exr", raw)
    (tmp_path / name).write_bytes((tmp_path / "linear.exr").read_bytes())
    status, _, err = cli(["fit", tmp_path / name, "--modality", "image", "--steps", 2, "--hidden-dim", 8, "--quiet",
                          "--out", tmp_path / "f"])
    assert status == 0, err
    signal = json.loads((tmp_path / "f" / "field.json").read_text())["signal"]
    assert signal["normalization"]["dtype"] == "float32" and signal["extra"] == {"format": "exr"}
    back = load_signal(str(tmp_path / "f" / "reconstruction.exr"))
    assert back.info.normalization.dtype == "float32"


def test_render_names_a_bad_region_before_an_existing_out(cli, tmp_path):
    """The request is checked first: a bad --region on an --out that exists said only "exists; pass --force"."""
    status, _, err = cli(["fit", "sample:camera", "--max-size", "8", "--steps", "2", "--device", "cpu", "--quiet",
                          "--out", tmp_path / "f"])
    assert status == 0, err
    (tmp_path / "old.png").write_bytes(b"mine")
    status, _, err = cli(["render", tmp_path / "f", "--region", "5:1,0:3", "--out", tmp_path / "old.png"])
    assert status == 2 and "--region range 5:1 is empty" in err and "--force" not in err
    assert (tmp_path / "old.png").read_bytes() == b"mine"
