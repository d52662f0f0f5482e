"""DI-Net's swept defaults (issue 20): Voronoi cell weights, the training mix, resolution augmentation."""

import pytest
import torch

from fieldlab.learn.layers import Discretized, SeparableDIConv
from fieldlab.learn.nets import net_config
from fieldlab.learn.points import PointSet, cell_volumes, grid, uniform
from fieldlab.learn.train import TrainConfig


def _box_sums(points: PointSet, f, half: float = 0.25) -> torch.Tensor:
    """Σ w f over boxes of half-width `half` around 9 centres: the quadrature a DI conv's support does."""
    centres = torch.tensor([(a, b) for a in (-0.5, 0.0, 0.5) for b in (-0.5, 0.0, 0.5)])
    inside = ((points.coords[None] - centres[:, None]).abs() <= half).all(-1).float()  # (9, n)
    return inside @ (points.weights * f(points.coords))


def test_cell_weights_make_a_random_set_a_riemann_sum_in_small_supports():
    f = lambda x: 1 + torch.sin(3 * x[:, 0]) * torch.cos(2 * x[:, 1])  # noqa: E731
    exact = _box_sums(grid((512, 512)), f)
    errors = {"given": [], "cells": []}
    for seed in range(4):
        points = uniform(256, 2, seed=seed)
        errors["given"].append((_box_sums(points, f) - exact).abs().mean())
        errors["cells"].append((_box_sums(points.with_cell_weights(), f) - exact).abs().mean())
    # i.i.d. points: ~16 per box, so the sampler's uniform weights are off by ~1/√16 of the box's mass
    assert torch.stack(errors["cells"]).mean() < 0.5 * torch.stack(errors["given"]).mean()


def test_cell_weights_sum_to_the_volume_follow_density_and_keep_grids():
    points = uniform(200, 2, seed=3).with_cell_weights()
    assert points.quadrature == "cells" and float(points.weights.sum()) == pytest.approx(4.0, rel=1e-5)
    clump = torch.cat([torch.rand(50, 2) * 0.2, torch.rand(50, 2) * 2 - 1])
    weights = cell_volumes(clump)
    assert weights[:50].mean() < 0.2 * weights[50:].mean() and bool((weights > 0).all())
    g = grid((8, 8))
    assert torch.equal(g.with_cell_weights().weights, g.weights)


def test_a_strided_prefix_of_a_cell_weighted_set_is_weighted_by_its_own_cells():
    points = uniform(256, 2, seed=1).with_cell_weights()
    coarse = points.downsample(2)
    assert len(coarse) == 64 and coarse.quadrature == "cells"
    assert torch.allclose(coarse.weights, cell_volumes(points.coords[:64]))


def test_default_dinet_reads_the_points_not_the_weights_it_is_given():
    cfg = net_config("dinet").for_points(64, 2)
    assert cfg.quadrature == "cells" and cfg.channels == 64 and cfg.separable
    torch.manual_seed(0)
    net = cfg.build(1, 3, 2).eval()
    points = uniform(64, 2, seed=5)
    skewed = PointSet(points.coords, torch.linspace(0.1, 2.0, 64) * (4 / torch.linspace(0.1, 2.0, 64).sum()), "random")
    values = torch.randn(2, 64, 1)
    with torch.no_grad():
        assert torch.allclose(net(Discretized(values, points)), net(Discretized(values, skewed)), atol=1e-5)


def test_dinet_trains_on_a_mix_by_default_and_other_nets_on_rqmc():
    dinet = TrainConfig(net="dinet").resolved()
    assert (dinet.points, dinet.mix) == ("mixed", "rqmc,grid,random,shrunk")
    assert TrainConfig(net="nuft").resolved().points == "rqmc"
    assert TrainConfig(net="dinet", num_points=200).resolved().mix == "rqmc,random,shrunk"  # no 200-point grid
    assert TrainConfig(net="dinet", points="qmc").resolved().points == "qmc"


def test_the_learning_rate_is_the_networks_own_unless_given(blob_store, tmp_path):
    from fieldlab.learn.nets import BASE_LR, SEPARABLE_LR
    from fieldlab.learn.train import train

    assert TrainConfig(net="dinet").resolved().lr == SEPARABLE_LR != BASE_LR  # the separable default's rate
    assert TrainConfig(net="dinet", net_options={"separable": False}).resolved().lr == BASE_LR  # full kernels'
    assert TrainConfig(net="cnn4").resolved().lr == TrainConfig(net="nuft").resolved().lr == BASE_LR
    assert TrainConfig(net="dinet", lr=1e-3).resolved().lr == 1e-3
    assert TrainConfig(net="dinet", init_from="cnn-run").resolved().lr == BASE_LR  # a translated full-kernel twin
    run = tmp_path / "run"
    train(blob_store, run, TrainConfig(net="dinet", net_options={"channels": 8}, num_points=64, steps=2,
                                       batch_size=8, log_every=1000), progress=lambda *_: None)
    import json

    assert json.loads((run / "config.json").read_text())["lr"] == SEPARABLE_LR  # the rate used, recorded


def test_a_resumed_run_keeps_the_rate_it_started_with(blob_store, tmp_path):
    """A run interrupted before the network's default rate changed goes on at the rate it recorded, unless --lr
    is given."""
    import json

    from fieldlab.learn.train import train

    run, quiet = tmp_path / "run", (lambda *_: None)
    config = TrainConfig(net="dinet", net_options={"channels": 8}, num_points=64, steps=4, batch_size=8,
                         checkpoint_every=2, log_every=1000)
    train(blob_store, run, config, progress=quiet, stop_at=2)
    recorded = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**recorded, "lr": 2e-3}))  # as the old default wrote it
    state = torch.load(run / "checkpoint.pt", weights_only=True)  # whose checkpoint recorded no options yet
    del state["identity"]
    torch.save(state, run / "checkpoint.pt")
    train(blob_store, run, config, progress=quiet, resume=True)
    assert json.loads((run / "config.json").read_text())["lr"] == 2e-3
    assert (run / "run.json").is_file()


def test_a_resumed_run_with_a_damaged_rate_is_one_line(blob_store, tmp_path):
    import json

    from fieldlab._errors import UserError
    from fieldlab.learn.train import train

    run, quiet = tmp_path / "run", (lambda *_: None)
    config = TrainConfig(net="dinet", net_options={"channels": 8}, num_points=64, steps=4, batch_size=8,
                         checkpoint_every=2, log_every=1000)
    train(blob_store, run, config, progress=quiet, stop_at=2)
    (run / "config.json").write_text(json.dumps({"lr": "fast"}))
    with pytest.raises(UserError, match="lr must be a number"):
        train(blob_store, run, config, progress=quiet, resume=True)
    assert not (run / "run.json").exists()


@pytest.mark.parametrize("lr", ["-1", "nan"])
def test_a_negative_learning_rate_is_one_line_and_writes_nothing(cli, blob_store, tmp_path, lr):
    status, out, err = cli(["train", blob_store, "--net", "dinet", "--out", tmp_path / "run", "--lr", lr])
    assert status == 2 and err.startswith("fieldlab: error:") and len(err.strip().splitlines()) == 1
    assert "--lr" in err and not (tmp_path / "run").exists()


def test_resolution_augmentation_draws_every_training_count():
    config = TrainConfig(points="rqmc", resolutions="4,6")
    samplers = config.samplers(2)
    assert [s.n for s in samplers] == [16, 36]
    assert {len(config.step_points(samplers, step)) for step in range(20)} == {16, 36}


@pytest.mark.parametrize("sides", ["1,16", "8,x", "8,,16"])
def test_bad_training_resolutions_are_one_line_and_write_nothing(cli, blob_store, tmp_path, sides):
    status, out, err = cli(["train", blob_store, "--net", "dinet", "--out", tmp_path / "run", "--resolutions", sides])
    assert status == 2 and err.startswith("fieldlab: error:") and len(err.strip().splitlines()) == 1
    assert "--resolutions" in err and not (tmp_path / "run").exists()


def test_a_dinet_run_from_before_cell_weights_is_rebuilt_with_its_own_weights(blob_store, tmp_path):
    import json

    from fieldlab.learn.train import load_run, train
    from fieldlab.store.field_store import FieldStore

    run = tmp_path / "run"
    train(blob_store, run, TrainConfig(net="dinet", net_options={"channels": 4}, num_points=64, steps=2,
                                       batch_size=8, log_every=1000), progress=lambda *_: None)
    info = json.loads((run / "run.json").read_text())
    assert info["net_options"]["quadrature"] == "cells" and info["train"]["points"] == "mixed"
    del info["net_options"]["quadrature"]  # as run.json was written before the option
    (run / "run.json").write_text(json.dumps(info))
    assert load_run(run, FieldStore(blob_store))[1].quadrature == "given"


def test_a_dinet_run_from_before_separable_convolutions_is_rebuilt_with_full_kernels(blob_store, tmp_path):
    import json

    from fieldlab.learn.train import load_run, train
    from fieldlab.store.field_store import FieldStore

    run = tmp_path / "run"
    train(blob_store, run, TrainConfig(net="dinet", net_options={"channels": 8, "separable": False}, num_points=64,
                                       steps=2, batch_size=8, log_every=1000), progress=lambda *_: None)
    info = json.loads((run / "run.json").read_text())
    for key in ("separable", "multiplier"):  # as run.json was written before the options
        del info["net_options"][key]
    (run / "run.json").write_text(json.dumps(info))
    net, cfg, _ = load_run(run, FieldStore(blob_store))
    assert not cfg.separable and not any(isinstance(m, SeparableDIConv) for m in net.modules())
