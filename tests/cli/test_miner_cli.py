"""MINER from the command line: fit, info's blocks per scale, reload + render identical, 2× render, the
active-blocks picture, a flat image."""

import json

import imageio.v3 as iio
import numpy as np


def fit(cli, tmp_path, input, out, *extra):
    status, stdout, stderr = cli(["fit", input, "--field", "miner", "--scales", "2", "--block-size", "8",
                                  "--hidden-dim", "10", "--steps", "120", "--lr", "5e-3", "--device", "cpu",
                                  "--quiet", "--out", tmp_path / out, *extra])
    assert status == 0, stderr
    return tmp_path / out, stdout


def test_fit_info_render_and_picture(tmp_path, cli):
    folder, stdout = fit(cli, tmp_path, "sample:camera", "cam", "--max-size", "32")
    assert "PSNR" in stdout
    assert (folder / "blocks.png").is_file() and iio.imread(folder / "blocks.png").ndim == 3
    status, info, _ = cli(["info", folder])
    assert status == 0 and "blocks    per scale (coarsest first) 0: " in info and "/16" in info
    status, _, stderr = cli(["render", folder, "--out", tmp_path / "same.png", "--device", "cpu"])
    assert status == 0, stderr
    assert np.array_equal(iio.imread(tmp_path / "same.png"), iio.imread(folder / "reconstruction.png"))
    status, _, stderr = cli(["render", folder, "--out", tmp_path / "big.png", "--size", "64", "64", "--device", "cpu"])
    assert status == 0, stderr
    assert iio.imread(tmp_path / "big.png").shape[:2] == (64, 64)


def test_flat_image_reports_zero_blocks(tmp_path, cli):
    iio.imwrite(tmp_path / "flat.png", np.full((24, 24), 128, np.uint8))
    folder, _ = fit(cli, tmp_path, tmp_path / "flat.png", "flat")
    status, info, _ = cli(["info", folder])
    assert status == 0 and "0: 0/" in info and "0 of 20 blocks have a network" in info


def test_bad_miner_option_is_one_line(tmp_path, cli):
    status, _, stderr = cli(["fit", "sample:camera", "--field", "miner", "--activation", "relu", "--out", tmp_path / "x"])
    assert status == 2 and "--activation must be one of" in stderr and not (tmp_path / "x").exists()


def test_crop_renders_the_kept_region_byte_for_byte(tmp_path, cli):
    folder, _ = fit(cli, tmp_path, "sample:camera", "cam64", "--max-size", "64", "--steps", "30")
    # 64² with blocks of 8: 4 + 16 + 64 blocks at most; the box cuts through blocks of every scale.
    status, stdout, stderr = cli(["crop", folder, "--out", tmp_path / "crop", "--keep", "4:37,16:64"])
    assert status == 0, stderr
    assert "cropped to 33x48" in stdout
    status, _, stderr = cli(["render", tmp_path / "crop", "--out", tmp_path / "b.png", "--device", "cpu"])
    assert status == 0, stderr
    status, _, stderr = cli(["render", folder, "--region", "4:37,16:64", "--out", tmp_path / "a.png", "--device", "cpu"])
    assert status == 0, stderr
    assert (tmp_path / "b.png").read_bytes() == (tmp_path / "a.png").read_bytes()
    status, out, _ = cli(["info", tmp_path / "crop", "--json"])
    info = json.loads(out)
    assert status == 0 and info["signal"]["shape"] == [33, 48]
    assert 0 < info["params"] < info["metrics"]["params_before_crop"]


def test_training_options_are_fit_flags_kept_out_of_the_field_config(tmp_path, cli):
    folder, _ = fit(cli, tmp_path, "sample:camera", "cam", "--max-size", "32", "--steps", "20", "--prune-mse", "1e-2",
                    "--check-every", "10", "--streaming", "off")
    field = json.loads((folder / "field.json").read_text())["field"]["config"]
    assert "prune_mse" not in field and "streaming" not in field  # how it was trained is not the field
    resolved = json.loads((folder / "config.json").read_text())
    assert resolved["prune_mse"] == 0.01 and resolved["check_every"] == 10 and resolved["streaming"] == "off"
    status, _, stderr = cli(["fit", "--config", folder / "config.json", "--out", tmp_path / "again", "--quiet"])
    assert status == 0, stderr
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == resolved


def test_a_bad_training_option_is_one_line_and_writes_nothing(tmp_path, cli):
    for args, message in [(["--field", "miner", "--streaming", "sometimes"], "--streaming must be one of auto, on, off"),
                          (["--field", "miner", "--prune-mse", "-1"], "--prune-mse must be non-negative"),
                          (["--field", "miner", "--check-every", "0"], "--check-every must be positive"),
                          (["--field", "siren", "--prune-mse", "1e-3"], "field 'siren' does not take --prune-mse")]:
        status, _, stderr = cli(["fit", "sample:camera", *args, "--out", tmp_path / "x"])
        assert status == 2 and message in stderr and stderr.count("\n") == 1, stderr
        assert not (tmp_path / "x").exists()


def test_a_field_json_that_still_holds_training_options_is_read(tmp_path, cli):
    folder, _ = fit(cli, tmp_path, "sample:camera", "cam", "--max-size", "32", "--steps", "10")
    data = json.loads((folder / "field.json").read_text())
    data["field"]["config"].update(threshold="absolute", prune_mse=4e-4, stop_mse=1e-4, check_every=50,
                                   streaming="auto", device_budget=0)  # as fieldlab wrote it before they moved
    (folder / "field.json").write_text(json.dumps(data))
    status, info, stderr = cli(["info", folder, "--json"])
    assert status == 0, stderr
    assert "prune_mse" not in json.loads(info)["config"]
