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
    for args, message in [(["--out", tmp_path / "full"], "not an empty folder"),
                          (["--out", tmp_path / "r", "--steps", 0], "--steps must be positive"),
                          (["--out", tmp_path / "r", "--scenes", 3], "--scenes must be at least 5")]:
        status, out, err = cli(["train-sdf", *args])
        assert status == 2 and message in err, err
    assert (tmp_path / "full" / "x").read_text() == "keep" and not (tmp_path / "r").exists()
