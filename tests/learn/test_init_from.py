"""`fieldlab train STORE --net dinet --init-from RUN`: a trained grid CNN, translated, starts a DI-Net."""

import json
import shutil

import pytest
import torch

from fieldlab.learn import points as P
from fieldlab.learn.layers import Discretized
from fieldlab.learn.train import TrainConfig, load_run, train


@pytest.fixture(scope="module")
def cnn_run(blob_store, tmp_path_factory):
    run = tmp_path_factory.mktemp("init") / "cnn4"
    train(blob_store, run, TrainConfig(net="cnn4", net_options={"channels": 4}, points="grid", num_points=64,
                                       steps=30, batch_size=32, lr=3e-3, log_every=1000))
    return run


def test_the_twin_of_a_cnn4_run_is_the_trained_cnn_on_its_grid(blob_store, cnn_run):
    from fieldlab.learn.translate import init_record, trained_twin
    from fieldlab.store.field_store import FieldStore

    store = FieldStore(blob_store)
    twin, init = init_record(cnn_run, "dinet", {}, store, 3)
    assert twin == "dinet4" and init["grid"] == [8, 8] and init["net_options"]["channels"] == 4
    cnn = load_run(cnn_run, store)[0]
    pts = P.grid((8, 8))
    x = Discretized(torch.randn(4, len(pts), 1, generator=torch.Generator().manual_seed(0)), pts)
    with torch.no_grad():
        assert (trained_twin(init, store).eval()(x) - cnn(x)).abs().max() < 1e-5


def test_train_init_from_fine_tunes_a_dinet4_that_eval_rebuilds(cli, blob_store, cnn_run, tmp_path):
    run = tmp_path / "run"
    status, out, err = cli(["train", blob_store, "--net", "dinet", "--init-from", cnn_run, "--points", "mixed",
                            "--mix", "grid,qmc", "--num-points", 64, "--steps", 4, "--batch-size", 16, "--out", run])
    assert status == 0, err
    info = json.loads((run / "run.json").read_text())
    assert info["net"] == "dinet4" and info["train"]["init_from"] == str(cnn_run)
    assert info["init"]["net"] == "cnn4" and info["init"]["grid"] == [8, 8] and info["init"]["run"] == str(cnn_run)
    status, out, err = cli(["eval", run, blob_store, "--points", "grid,qmc", "--draws", 1])
    assert status == 0 and "mixed@64 → qmc" in out, err


@pytest.mark.parametrize("case, message", [
    ("missing", "no such run folder"),
    ("not a run", "not a finished training run"),
    ("mlp run", "has no DI twin"),
    ("--net nuft", "translates into --net dinet4"),
    ("--channels 8", "differs from the run's 4"),
    ("--support 0.2", "does not apply to a translated CNN"),
    ("other labels", "was trained on the labels"),
])
def test_a_bad_init_from_is_one_line_and_writes_nothing(cli, blob_store, make_blob_store, cnn_run, tmp_path,
                                                         case, message):
    source, store, extra = cnn_run, blob_store, []
    if case == "missing":
        source = tmp_path / "cnn4-run"
    elif case == "not a run":
        source = tmp_path / "folder"
        source.mkdir()
    elif case == "mlp run":  # a finished run whose network is no grid CNN
        source = tmp_path / "mlp"
        shutil.copytree(cnn_run, source)
        info = json.loads((source / "run.json").read_text())
        (source / "run.json").write_text(json.dumps({**info, "net": "mlp", "net_options": {}}))
    elif case == "other labels":
        store = make_blob_store("other", num_fields=40, label_names=("a", "b", "c"))
    else:
        extra = case.split()
    command = ["train", store, "--init-from", source, "--out", tmp_path / "run", "--steps", 2] + extra
    if "--net" not in extra:
        command += ["--net", "dinet"]
    status, out, err = cli(command)
    assert status == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("fieldlab: error:")
    assert not (tmp_path / "run").exists()
