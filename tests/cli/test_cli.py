"""The command line as a user meets it: the README's commands, the contract's files, bad input."""

import json
import re
import shlex
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fieldlab.fields import list_fields

ROOT = Path(__file__).resolve().parents[2]


def quick_fit(tmp_path, cli, *extra, out="cam"):
    status, stdout, stderr = cli(["fit", "sample:camera", "--max-size", "24", "--field", "siren", "--steps", "30",
                                  "--out", tmp_path / out, "--device", "cpu", "--quiet", *extra])
    assert status == 0, stderr
    return tmp_path / out


def test_readme_quickstart_commands(tmp_path, cli):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    install_and_fit, install_and_test = blocks[0].strip(), blocks[1].strip()
    assert install_and_test.endswith("python -m pytest tests")
    assert "python -m pytest tests" in (ROOT / ".ci" / "run").read_text()
    words = shlex.split(install_and_fit.split("&&", 1)[1])
    assert words[0] == "fieldlab" and "sample:astronaut" in words
    out = Path(words[words.index("--out") + 1])
    words[words.index("--out") + 1] = str(tmp_path / out.name)
    # The README's own command, shortened (a later option wins) so the suite stays fast.
    status, stdout, stderr = cli(words[1:] + ["--steps", "15", "--max-size", "64", "--quiet"])
    assert status == 0, stderr
    folder = tmp_path / out.name
    for name in ("field.safetensors", "field.json", "metrics.json", "reconstruction.png", "config.json", "log.jsonl"):
        assert (folder / name).is_file(), name
    assert "PSNR" in stdout


def test_fit_render_info(tmp_path, cli):
    folder = quick_fit(tmp_path, cli)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"psnr", "ssim", "params", "steps", "seconds"} <= set(metrics)
    assert metrics["steps"] == 30
    assert iio.imread(folder / "reconstruction.png").shape == (24, 24)
    lines = (folder / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 30 and "psnr" in json.loads(lines[0])

    status, stdout, _ = cli(["render", folder, "--size", "48", "48", "--out", tmp_path / "x.png"])
    assert status == 0 and iio.imread(tmp_path / "x.png").shape == (48, 48)
    status, _, _ = cli(["render", folder, "--region", "0:12,0:24", "--out", tmp_path / "top.png"])
    assert status == 0 and iio.imread(tmp_path / "top.png").shape == (12, 24)

    status, stdout, _ = cli(["info", folder])
    assert status == 0 and "siren" in stdout and "psnr" in stdout
    status, stdout, _ = cli(["info", folder, "--json"])
    assert json.loads(stdout)["params"] == metrics["params"]


def test_fields_lists_every_architecture(cli):
    status, stdout, _ = cli(["fields"])
    assert status == 0
    assert [line.split()[0] for line in stdout.splitlines()] == list_fields()
    assert {"finer", "fourier", "gauss", "hashgrid", "siren", "wire"} <= set(list_fields())
    status, stdout, _ = cli(["fields", "siren"])
    assert "--omega0" in stdout and "--hidden-dim" in stdout


def test_field_options_params_and_config_file(tmp_path, cli):
    folder = quick_fit(tmp_path, cli, "--hidden-dim", "16", "--omega0=20")
    config = json.loads((folder / "config.json").read_text())
    assert config["hidden_dim"] == 16 and config["omega0"] == 20.0 and config["steps"] == 30
    # The resolved config repeats the run.
    status, _, stderr = cli(["fit", "--config", folder / "config.json", "--out", tmp_path / "again", "--quiet"])
    assert status == 0, stderr
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["psnr"] == json.loads((folder / "metrics.json").read_text())["psnr"]

    sized = quick_fit(tmp_path, cli, "--params", "5000", "--field", "finer", out="sized")
    params = json.loads((sized / "metrics.json").read_text())["params"]
    assert abs(params - 5000) < 500


def test_target_psnr_stops_early(tmp_path, cli):
    folder = quick_fit(tmp_path, cli, "--target-psnr", "25", "--steps", "2000", "--hidden-dim", "64")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["steps"] < 2000 and metrics["psnr"] >= 25


def test_force_replaces_and_no_force_refuses(tmp_path, cli):
    folder = quick_fit(tmp_path, cli)
    before = (folder / "field.safetensors").read_bytes()
    status, _, stderr = cli(["fit", "sample:camera", "--out", folder, "--steps", "3", "--quiet"])
    assert status == 2 and "--force" in stderr
    assert (folder / "field.safetensors").read_bytes() == before
    quick_fit(tmp_path, cli, "--force", "--seed", "3")
    assert (folder / "field.safetensors").read_bytes() != before


def _corrupt(tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return path


def _empty(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    return path


def _text(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    return path


BAD_FITS = [
    (lambda t: ["fit", t / "missing.png"], "no such file"),
    (lambda t: ["fit", _empty(t)], "is empty"),
    (lambda t: ["fit", _corrupt(t)], "cannot read"),
    (lambda t: ["fit", _text(t)], "unsupported file type"),
    (lambda t: ["fit", "sample:camera", "--field", "nope"], "unknown field"),
    (lambda t: ["fit", "sample:camera", "--steps", "0"], "--steps"),
    (lambda t: ["fit", "sample:camera", "--steps", "-5"], "--steps"),
    (lambda t: ["fit", "sample:camera", "--max-size", "0"], "--max-size"),
    (lambda t: ["fit", "sample:camera", "--params", "1000000000000"], "--params"),
    (lambda t: ["fit", "sample:camera", "--lr", "-1"], "--lr"),
    (lambda t: ["fit", "sample:camera", "--hidden-dim", "0"], "--hidden-dim"),
    (lambda t: ["fit", "sample:camera", "--hidden-dim", "100000000"], "--hidden-dim must be at most"),
    (lambda t: ["fit", "sample:camera", "--scales", "3"], "does not take --scales"),
    (lambda t: ["fit", "sample:camera", "--precision", "fp8"], "--precision"),
    (lambda t: ["fit", "sample:camera", "--steps", "many"], "steps"),
    (lambda t: ["fit", "sample:camera", "--device", "tpu"], "--device"),
    (lambda t: ["fit", "sample:nope"], "unknown sample"),
    (lambda t: ["fit"], "INPUT"),
    (lambda t: ["fit", "sample:camera", "--omega0", "nan"], "--omega0 must be positive"),
    (lambda t: ["fit", "sample:camera", "--omega0", "-30"], "--omega0 must be positive"),
    (lambda t: ["fit", "sample:camera", "--field", "hashgrid", "--params", "10"], "below the smallest hashgrid"),
    (lambda t: ["fit", "sample:camera", "--max-size", "64", "--field", "miner", "--scales", "10"], "--scales 5 or fewer"),
    (lambda t: ["fit", "--config", _config(t, steps="many")], "--steps expects int"),
    (lambda t: ["fit", "--config", _config(t, steps=2.5)], "--steps expects int"),
]


def _config(tmp_path, **options):
    path = tmp_path / "options.json"
    path.write_text(json.dumps({"input": "sample:camera", **options}))
    return path


@pytest.mark.parametrize("make_args, message", BAD_FITS)
def test_bad_fit_input_one_line_exit_2_nothing_written(tmp_path, cli, make_args, message):
    out = tmp_path / "out"
    status, stdout, stderr = cli(make_args(tmp_path) + ["--out", out, "--quiet"])
    assert status == 2
    assert len(stderr.strip().splitlines()) == 1 and message in stderr, stderr
    assert "Traceback" not in stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_bad_render_and_info_input(tmp_path, cli):
    folder = quick_fit(tmp_path, cli)
    cases = [
        (["render", tmp_path / "nowhere", "--out", tmp_path / "a.png"], "not a field folder"),
        (["render", folder, "--out", tmp_path / "a.wav"], "image fields are written as one of"),
        (["render", folder, "--size", "0", "10", "--out", tmp_path / "a.png"], "--size"),
        (["render", folder, "--region", "5:1,0:3", "--out", tmp_path / "a.png"], "--region"),
        (["render", folder, "--out", folder / "reconstruction.png"], "exists"),
        (["info", tmp_path / "nowhere"], "not a field folder"),
    ]
    for args, message in cases:
        status, _, stderr = cli(args)
        assert status == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, (args, stderr)
    assert not (tmp_path / "a.png").exists()


def test_no_field_option_is_taken_by_a_fit_or_mesh_option_of_the_same_name():
    """`fit` routes a flag by its name: a field option named like a FitConfig, job or mesh option would be
    unreachable (as the Fourier field's --sigma once was, taken as the mesh sampling noise)."""
    import dataclasses

    from fieldlab.fields import get_config_class, list_fields
    from fieldlab.fit import FitConfig
    from fieldlab.fit.job import FitJob
    from fieldlab.fit.occupancy import OccupancyConfig

    taken = {f.name for c in (FitConfig, FitJob, OccupancyConfig) for f in dataclasses.fields(c)}
    for name in list_fields():
        cls = get_config_class(name)
        chosen = set(cls.option_names()) - set(cls.resolved) - {"in_dim", "out_dim"}
        assert not chosen & taken, (name, chosen & taken)


def test_metrics_are_strict_json_and_float_images_come_back_as_float_tiffs(tmp_path, cli):

    iio.imwrite(tmp_path / "tiny.png", np.arange(16, dtype=np.uint8).reshape(4, 4) * 16)
    status, _, err = cli(["fit", tmp_path / "tiny.png", "--steps", "5", "--out", tmp_path / "t", "--quiet"])
    assert status == 0, err
    strict = json.loads((tmp_path / "t" / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert strict["ssim"] is None  # no SSIM window fits 4×4: null, not NaN
    values = np.linspace(17, 876, 64, dtype=np.float32).reshape(8, 8)
    iio.imwrite(tmp_path / "float.tif", values)
    status, _, err = cli(["fit", tmp_path / "float.tif", "--steps", "20", "--out", tmp_path / "f", "--quiet"])
    assert status == 0, err
    back = iio.imread(tmp_path / "f" / "reconstruction.tif")
    assert back.dtype == np.float32 and back.max() > 300  # the values themselves, not clipped to 8 bits


def test_field_names_take_dashes_or_underscores(cli):
    for spelling in ("spatial-functa", "local_global"):
        status, stdout, err = cli(["fields", spelling])
        assert status == 0 and "--" in stdout, err
    status, _, err = cli(["fields", "spatial-funky"])
    assert status == 2 and "unknown field" in err


def test_a_render_past_the_signal_says_it_extrapolates(tmp_path, cli):
    folder = quick_fit(tmp_path, cli)
    status, _, err = cli(["render", folder, "--region", "-8:8,0:16", "--out", tmp_path / "past.png"])
    assert status == 0 and "extrapolated" in err
    status, _, err = cli(["render", folder, "--region", "0:8,0:16", "--out", tmp_path / "inside.png"])
    assert status == 0 and "extrapolated" not in err


def test_an_interrupted_fit_resumes_to_the_field_an_uninterrupted_one_gives(tmp_path, cli, monkeypatch):
    import importlib

    from safetensors.torch import load_file

    loop = importlib.import_module("fieldlab.fit.loop")  # `fieldlab.fit` the attribute is the function

    monkeypatch.setattr(loop, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint at every logged step
    fit = ["fit", "sample:camera", "--max-size", "16", "--steps", "40", "--batch-size", "64", "--log-every", "10",
           "--device", "cpu", "--quiet"]
    step = loop.Fitter.step

    def interrupted(self):
        if self.step_count == 25:  # between the checkpoints of steps 20 and 30
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(loop.Fitter, "step", interrupted)
    status, _, err = cli(fit + ["--out", tmp_path / "b"])
    assert status == 130 and "--resume" in err and not (tmp_path / "b").exists()
    assert (tmp_path / ".b.checkpoint.pt").is_file()
    monkeypatch.setattr(loop.Fitter, "step", step)
    status, _, err = cli(fit + ["--steps", "50", "--out", tmp_path / "b", "--resume"])
    assert status == 2 and "other options" in err  # another schedule cannot continue this one
    status, _, err = cli(fit + ["--out", tmp_path / "b", "--resume"])
    assert status == 0, err
    assert not (tmp_path / ".b.checkpoint.pt").exists()
    status, _, err = cli(fit + ["--out", tmp_path / "a"])
    assert status == 0, err
    a, b = (load_file(str(tmp_path / d / "field.safetensors")) for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed from step 20: the same field, bit for bit
    steps = [[json.loads(line)["step"] for line in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in "ab"]
    assert steps[0] == steps[1] == [10, 20, 30, 40]
    status, _, err = cli(fit + ["--out", tmp_path / "c", "--resume"])
    assert status == 2 and "no checkpoint" in err
