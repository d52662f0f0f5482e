import csv
import dataclasses
import json
import os
import socket

import pytest
import torch

from fieldlab._errors import UserError
from fieldlab.learn.train import TrainConfig, train

SMALL = dict(num_points=64, batch_size=32, lr=3e-3, log_every=1000)


def test_train_and_eval_commands(cli, blob_store, tmp_path):
    run = tmp_path / "run"
    status, out, err = cli(["train", blob_store, "--net", "dinet2", "--out", run, "--num-points", 64,
                            "--steps", 80, "--batch-size", 32, "--lr", 3e-3, "--channels", 16])
    assert status == 0, err
    info = json.loads((run / "run.json").read_text())
    assert info["net"] == "dinet2" and info["net_options"]["channels"] == 16
    assert info["metrics"]["test_accuracy"] >= 0.6  # 3 balanced classes: chance is 1/3
    assert (run / "net.safetensors").exists() and (run / "config.json").exists()

    status, out, err = cli(["eval", run, blob_store, "--points", "grid,qmc,rqmc,random,shrunk",
                            "--resolutions", "8,16"])
    assert status == 0, err
    for kind in ("grid", "qmc", "rqmc", "random", "shrunk"):
        assert f"rqmc@64 → {kind}" in out
    assert "invariance gap" in out
    rows = list(csv.DictReader(open(run / "eval.csv")))
    assert len(rows) == 10 and {r["points"] for r in rows} == {"64", "256"}
    assert all(float(r["accuracy"]) > 0.5 for r in rows)  # every discretization sees the fields


def test_grid_cnn_and_weight_mlp_baselines(blob_store, tmp_path):
    from fieldlab.learn.evaluate import evaluate

    for net, points in (("cnn2", "grid"), ("mlp", "qmc")):
        metrics = train(blob_store, tmp_path / net, TrainConfig(net=net, points=points, steps=40, **SMALL))
        assert 0 <= metrics["test_accuracy"] <= 1
    rows = evaluate(tmp_path / "cnn2", blob_store, points=["grid", "qmc"], resolutions=[8])
    assert rows[0]["accuracy"] is not None and rows[1]["accuracy"] is None  # a grid CNN cannot see QMC points
    rows = evaluate(tmp_path / "mlp", blob_store, points=["grid", "qmc"], resolutions=[8])
    assert [r["train"] for r in rows] == ["weights", "weights"]  # it read no points, whatever it trained with


def test_resume_continues_exactly(blob_store, tmp_path):
    config = TrainConfig(net="dinet2", steps=6, checkpoint_every=3, net_options={"channels": 8}, **SMALL)
    straight = train(blob_store, tmp_path / "a", config)
    train(blob_store, tmp_path / "b", config, stop_at=3)
    assert not (tmp_path / "b" / "run.json").exists()
    resumed = train(blob_store, tmp_path / "b", config, resume=True)
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "a" / "net.safetensors")), load_file(str(tmp_path / "b" / "net.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_refuses_a_checkpoint_of_other_options(blob_store, tmp_path):
    """A checkpoint continues only the run it was saved by: other steps, network options or seed are refused
    before anything is written; the device, the time limit and how often it logs and saves may change. A
    checkpoint saved before `train` recorded its options is taken as it is."""
    config = TrainConfig(net="dinet2", steps=6, checkpoint_every=3, net_options={"channels": 8}, **SMALL)
    train(blob_store, tmp_path / "b", config, stop_at=3)
    before = (tmp_path / "b" / "checkpoint.pt").read_bytes()
    for other in ({"steps": 7}, {"seed": 5}, {"net_options": {"channels": 8, "support": 0.3}}):
        with pytest.raises(UserError, match=rf"other options \({next(iter(other))}\)"):  # names what differs
            train(blob_store, tmp_path / "b", dataclasses.replace(config, **other), resume=True)
        assert (tmp_path / "b" / "checkpoint.pt").read_bytes() == before and not (tmp_path / "b" / "run.json").exists()
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    del state["identity"]
    torch.save(state, tmp_path / "b" / "checkpoint.pt")
    resumed = train(blob_store, tmp_path / "b", dataclasses.replace(config, log_every=1, max_seconds=600), resume=True)
    assert resumed["steps"] == 6


def test_refusals(cli, blob_store, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    for args, message in [
        (["--net", "resnet9000"], "unknown network"),
        (["--points", "grid", "--num-points", 60], "not square"),
        (["--net", "dinet2", "--kernel-size", 3], "does not take --kernel-size"),
        (["--jitter", -0.1], "--jitter must be between 0 and 4"),
        (["--noise", -1], "--noise must be between 0 and 10"),
    ]:
        status, out, err = cli(["train", blob_store, "--out", tmp_path / "r", *args])
        assert status == 2 and message in err, err
    status, out, err = cli(["train", blob_store, "--out", tmp_path / "full"])
    assert status == 2 and "not empty" in err
    assert (tmp_path / "full" / "x").read_text() == "keep"
    status, out, err = cli(["eval", tmp_path / "full", blob_store])
    assert status == 2 and "not a finished training run" in err


def test_an_incomplete_store_is_refused_before_the_run_is_written(cli, make_blob_store, tmp_path):
    partial = make_blob_store("partial", chunks=2)  # 80 of 160 fields, as after an interrupt
    status, out, err = cli(["train", partial, "--net", "mlp", "--steps", 2, "--out", tmp_path / "run"])
    assert status == 2 and "incomplete: 80 of 160 fields" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_store_too_small_to_hold_out_a_test_item_is_refused_before_the_run_is_written(cli, make_blob_store,
                                                                                        tmp_path):
    small = make_blob_store("small", num_fields=4)  # every 5th item held out: none of 4
    status, _, err = cli(["fit-dataset", "sample:balls", "--limit", "4", "--steps", "2", "--device", "cpu", "--quiet",
                          "--out", tmp_path / "balls"])
    assert status == 0, err
    for command in (["train", small, "--net", "mlp"], ["train-sdf", "--store", tmp_path / "balls"]):
        status, out, err = cli(command + ["--steps", 2, "--out", tmp_path / "run"])
        assert status == 2 and "4 source item(s) are too few" in err, err  # train-sdf divided by zero at its end
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_grid_cnn_with_other_points_is_refused_before_the_run_is_written(cli, blob_store, tmp_path):
    for points in (["--points", "qmc"], ["--points", "mixed", "--mix", "grid,qmc"]):
        status, out, err = cli(["train", blob_store, "--net", "cnn4", *points, "--out", tmp_path / "run"])
        assert status == 2 and "--points grid" in err and not (tmp_path / "run").exists(), err
    status, out, err = cli(["train", blob_store, "--net", "cnn2", "--points", "grid", "--num-points", 64,
                            "--steps", 2, "--out", tmp_path / "run"])
    assert status == 0, err  # the corrected command runs into the same folder


def test_a_grid_cnn_at_its_default_points_trains_on_grids(cli, blob_store, tmp_path):
    status, out, err = cli(["train", blob_store, "--net", "cnn4", "--num-points", 64, "--steps", 2,
                            "--out", tmp_path / "run"])
    assert status == 0, err
    assert json.loads((tmp_path / "run" / "run.json").read_text())["train"]["points"] == "grid"


def test_eval_refuses_a_store_the_run_does_not_fit_and_keeps_its_table(cli, blob_store, make_blob_store, tmp_path):
    run = tmp_path / "run"
    train(blob_store, run, TrainConfig(net="mlp", steps=3, **SMALL))  # an MLP on the weights themselves
    status, out, err = cli(["eval", run, blob_store, "--points", "qmc"])
    assert status == 0, err
    table = (run / "eval.csv").read_text()
    wider = make_blob_store("wider", num_fields=40, hidden_dim=20)
    renamed = make_blob_store("renamed", num_fields=40, label_names=("a", "b", "c"))
    for store, points, message in [(wider, "qmc", "fields of another size"),
                                   (renamed, "qmc", "trained on the labels low, middle, high"),
                                   (blob_store, "", "names no point set")]:
        status, out, err = cli(["eval", run, store, "--points", points])
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert (run / "eval.csv").read_text() == table


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, store, out, config):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(store, out, config, progress=lambda *_: None)
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_train_like_one(blob_store, tmp_path):
    """DDP with 2 CPU processes (each half of the global batch, DI norms all-reduced) equals one process."""
    config = TrainConfig(net="dinet2", steps=4, net_options={"channels": 8}, **SMALL)
    train(blob_store, tmp_path / "one", config, progress=lambda *_: None)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), blob_store, tmp_path / "two", config), nprocs=2)
    from safetensors.torch import load_file

    one, two = load_file(str(tmp_path / "one" / "net.safetensors")), load_file(str(tmp_path / "two" / "net.safetensors"))
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5), k


def test_mixed_training_points_draw_from_the_given_mix():
    config = TrainConfig(points="mixed", mix="rqmc,random", num_points=64)
    kinds = {config.sampler(2)(step).kind for step in range(40)}
    assert kinds == {"rqmc-sobol", "random"}
    with pytest.raises(UserError, match="--mix takes point sets"):
        TrainConfig(points="mixed", mix="grid,mixed").validate()


def test_eval_averages_randomized_point_sets_over_draws(cli, blob_store, tmp_path):
    from fieldlab.learn.evaluate import evaluate

    run = tmp_path / "run"
    train(blob_store, run, TrainConfig(net="dinet2", steps=20, net_options={"channels": 8}, **SMALL))
    rows = evaluate(run, blob_store, points=["grid", "rqmc"], resolutions=[8], draws=3)
    assert [r["draws"] for r in rows] == [1, 3]  # a grid is one set; rqmc is drawn three times
    singles = [evaluate(run, blob_store, points=["rqmc"], resolutions=[8], seed=1 + 7919 * k, draws=1)[0]["accuracy"]
               for k in range(3)]
    assert rows[1]["accuracy"] == pytest.approx(sum(singles) / 3)
    status, _, err = cli(["eval", run, blob_store, "--draws", "0"])
    assert status == 2 and "--draws must be positive" in err
    status, out, err = cli(["eval", run, blob_store, "--points", "grid", "--resolutions", "8"])
    assert status == 0, err
    assert "across point sets at 64 pts: not measured (the training point set, rqmc, is not among --points)" in out


def test_jitter_counts_in_sample_spacings_of_each_axis():
    """`train --jitter J` moves each coordinate by J sample spacings (standard deviation) of the store, axis by
    axis, as `fit-dataset --jitter` counts: on 8×8 digits 0.24 is 0.06 of the [-1, 1] domain (BENCHMARKS.md's
    transfer table), on a 4×16 store the axes differ."""
    from types import SimpleNamespace

    from fieldlab.learn.store_tasks import StoreTask

    def sigma(jitter, shape):
        return StoreTask.jitter(SimpleNamespace(config=SimpleNamespace(jitter=jitter), signal=SimpleNamespace(shape=shape)))

    assert sigma(0.0, (8, 8)) == 0.0
    assert torch.allclose(sigma(0.24, (8, 8)), torch.tensor([0.06, 0.06]))
    assert torch.allclose(sigma(0.5, (4, 16)), torch.tensor([0.25, 0.0625]))


def test_a_run_trains_with_jitter_on_a_two_dimensional_store(blob_store, tmp_path):
    """`train --jitter` on a 2-D store: the per-axis standard deviations are a tensor, which `make_input` read as a
    truth value and stopped the run at its first step."""
    metrics = train(blob_store, tmp_path / "r", TrainConfig(net="dinet2", points="rqmc", num_points=64, steps=2,
                                                            batch_size=4, jitter=0.24, net_options={"channels": 4},
                                                            log_every=1000), progress=lambda *_: None)
    assert metrics["steps"] == 2


def test_jitter_moves_points_on_their_own_device_by_axis():
    """The noise is drawn on the CPU (the same on every device) and moved to the points' device with its scale;
    a zero jitter leaves the points as they are."""
    from fieldlab.learn.store_tasks import jittered

    coords = torch.zeros(1000, 2)
    moved = jittered(coords, torch.tensor([0.5, 0.01]), torch.Generator().manual_seed(0))
    assert 0.4 < float(moved[:, 0].std()) < 0.6 and float(moved[:, 1].std()) < 0.02
    assert jittered(coords, 0.0, None) is coords
    assert jittered(coords.to("meta"), torch.tensor([0.5, 0.01]), torch.Generator().manual_seed(0)).device.type == "meta"
