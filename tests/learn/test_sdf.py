import json

import torch

from fieldlab.learn.sdf import SDFConfig, ball_scenes, occupancy, scene_sdf, train_sdf


def test_ball_scenes_and_exact_sdf():
    centres, radii = ball_scenes(10, seed=3)
    again = ball_scenes(10, seed=3)
    assert torch.equal(centres, again[0]) and torch.equal(radii, again[1])
    balls = (radii > 0).sum(1)
    assert balls.min() >= 2 and balls.max() <= 4
    on_surface = centres[:1, 0] + torch.tensor([radii[0, 0], 0, 0])  # a point on ball 0 of scene 0
    at = torch.cat([centres[:1, 0], on_surface])
    sdf = scene_sdf(centres[:1], radii[:1], at)[0]
    assert sdf[0] <= -radii[0, 0] + 1e-6 and sdf[1] <= 1e-6  # inside the ball; on (or inside) the union's surface
    assert occupancy(centres[:1], radii[:1], at)[0, 0, 0] > 0.99


def test_sdf_net_beats_constant_baseline(tmp_path):
    config = SDFConfig(scenes=60, steps=200, num_points=256, num_queries=128, batch_size=8, lr=1e-2,
                       net_options={"channels": 16})
    metrics = train_sdf(config, tmp_path / "run", progress=lambda *_: None)
    assert metrics["test_mae"] < 0.85 * metrics["baseline_mae"], \
        f"DI-Net SDF MAE {metrics['test_mae']:.3f} vs constant-mean baseline {metrics['baseline_mae']:.3f}"
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["net"] == "sdf" and (tmp_path / "run" / "net.safetensors").exists()


def test_train_sdf_command_refusals(cli, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    for args, message in [(["--out", tmp_path / "full"], "is not empty; pass --resume to continue it or --force"),
                          (["--out", tmp_path / "r", "--steps", 0], "--steps must be positive"),
                          (["--out", tmp_path / "r", "--scenes", 3], "--scenes must be at least 5")]:
        status, out, err = cli(["train-sdf", *args])
        assert status == 2 and message in err, err
    assert (tmp_path / "full" / "x").read_text() == "keep" and not (tmp_path / "r").exists()


def test_eval_of_an_sdf_run_tabulates_the_error_per_point_set(cli, tmp_path):
    import csv

    config = SDFConfig(scenes=20, steps=5, num_points=216, num_queries=64, batch_size=4, net_options={"channels": 4})
    train_sdf(config, tmp_path / "run", progress=lambda *_: None)
    status, out, err = cli(["eval", tmp_path / "run", "--points", "grid,qmc,shrunk", "--resolutions", "4,6"])
    assert status == 0, err
    assert "SDF error" in out and "rqmc@216 → shrunk" in out
    rows = list(csv.DictReader(open(tmp_path / "run" / "eval.csv")))
    assert [(r["test"], r["points"]) for r in rows] == [(k, n) for n in ("64", "216") for k in ("grid", "qmc", "shrunk")]
    assert {r["metric"] for r in rows} == {"sdf_mae"} and all(0 < float(r["accuracy"]) < 2 for r in rows)
    status, out, err = cli(["eval", tmp_path / "run", tmp_path / "run"])
    assert status == 2 and "without a STORE" in err
    status, out, err = cli(["eval", tmp_path / "run", "--device", "bogus"])
    assert status == 2 and "--device must be" in err, err
    status, out, err = cli(["eval", tmp_path / "missing"])
    assert status == 2 and "not a finished training run" in err, err


def test_sdf_from_fitted_fields_of_rendered_scenes(cli, tmp_path):
    """fit-dataset sample:balls (2-D scenes as images) → train-sdf --store reads the SIRENs through the
    batched path and beats the constant baseline; eval reads the recorded store."""
    from fieldlab.signals.balls import ball_images, ball_scenes

    centres, radii = ball_scenes(3, dim=2)
    image = ball_images(3, size=32)[1]
    row, col = ((centres[1, 0] + 1) / 2 * 32).long().tolist()  # the pixel of ball 0's centre is inside
    assert image[row, col] > 0.9 and image.min() < -0.9
    store, run = tmp_path / "store", tmp_path / "run"
    status, out, err = cli(["fit-dataset", "sample:balls:40", "--field", "siren", "--out", store, "--steps", 150,
                            "--hidden-dim", 32, "--num-layers", 3])
    assert status == 0, err
    status, out, err = cli(["train-sdf", "--out", run, "--store", store, "--steps", 80, "--num-points", 256,
                            "--num-queries", 128, "--batch-size", 8, "--channels", 8])
    assert status == 0, err
    info = json.loads((run / "run.json").read_text())
    assert info["input"] == "store" and info["dim"] == 2 and info["metrics"]["test_scenes"] == 8
    assert info["metrics"]["test_mae"] < 0.8 * info["metrics"]["baseline_mae"], info["metrics"]
    status, out, err = cli(["eval", run, "--points", "grid,qmc", "--resolutions", "16"])
    assert status == 0 and "rqmc@256 → qmc" in out, err


def test_train_sdf_store_must_hold_ball_scenes(cli, blob_store, tmp_path):
    status, out, err = cli(["train-sdf", "--out", tmp_path / "r", "--store", blob_store, "--steps", 2])
    assert status == 2 and "sample:balls" in err, err


def test_train_sdf_mixed_points_draw_from_the_given_mix(cli, tmp_path):
    kinds = {SDFConfig(points="mixed", mix="rqmc,random", num_points=64).sampler(3)(step).kind for step in range(40)}
    assert kinds == {"rqmc-sobol", "random"}
    status, out, err = cli(["train-sdf", "--out", tmp_path / "r", "--points", "mixed", "--mix", "grid,nope",
                            "--steps", 2, "--scenes", 5])
    assert status == 2 and "--mix takes point sets" in err, err
    assert not (tmp_path / "r").exists()
