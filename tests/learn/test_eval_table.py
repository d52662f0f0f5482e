"""eval's invariance table: every cell's drop from the training cell, the gap across point sets and the gap
across resolutions (a grid CNN's collapse shows), several stores of the same signals, one-line refusals."""

import dataclasses
import importlib.util
import json

import numpy as np
import pytest
import torch

from fieldlab.learn._eval_report import TrainingCell, add_drops, format_summary, format_table, legend, summarize
from fieldlab.learn.sdf import SDFTask
from fieldlab.learn.store_tasks import ClassifyTask, SegmentTask
from fieldlab.learn.task import Metric
from fieldlab.learn.train import TrainConfig, train

KINDS = ("grid", "qmc", "rqmc", "random", "shrunk")


def table(values: dict, *, store="a", field="siren", train="grid@64", metric="accuracy", dim=2, kinds=KINDS):
    """Rows as `evaluate` returns them from {(point set, side): value} (missing: the net cannot read it)."""
    sides = sorted({side for _, side in values})
    return [{"store": store, "field": field, "train": train, "test": kind, "resolution": side, "points": side ** dim,
             "accuracy": values.get((kind, side)), "metric": metric, "draws": 1} for side in sides for kind in kinds]


TASK_METRICS = {task.metric.name: task.metric for task in (ClassifyTask, SegmentTask, SDFTask)}


def summary_of(rows, points, side, count, dim=2, store="a", metric=None):
    """The training cell (scored by `metric`, default: the task metric the rows name) and the summary."""
    metric = metric or TASK_METRICS[rows[0]["metric"]]
    cell = TrainingCell(points=points, resolution=side, count=count, dim=dim, store=store, trained_on_store=True,
                        metric=metric)
    add_drops(rows, cell)
    return cell, summarize(rows, cell)


def test_a_grid_cnns_resolution_collapse_is_the_resolution_gap_not_a_zero_point_set_gap():
    rows = table({("grid", 16): 0.964, ("grid", 32): 0.145})  # cnn4 on digits: 96.4% at 16², 14.5% at 32²
    cell, summary = summary_of(rows, "grid", 16, 256)
    assert summary["resolution_gap"] == {"value": pytest.approx(81.9), "points": "grid", "from": 16, "to": 32}
    assert summary["resolution_gap_any_point_set"]["value"] == pytest.approx(81.9)
    assert summary["point_set_gap"] == {"value": None, "why": "the network reads only grid among --points"}
    text = format_summary(rows, cell, summary)
    assert "invariance gap across resolutions, grid: 81.9 points (grid, 256 → 1024 pts)" in text
    assert "invariance gap across point sets at 256 pts: not measured (the network reads only grid" in text


@pytest.mark.parametrize("other,hinted", [(0.94, True), (0.97, False)])
def test_a_store_that_reads_more_than_three_points_lower_names_the_jitter(other, hinted):
    """Trained on store a (98% at rqmc@256); store b of another architecture at 94% (4 points lower) gets a line
    naming `train --jitter`; at 97% (1 point) it does not."""
    rows = (table({("rqmc", 16): 0.98}, store="a", train="rqmc@256")
            + table({("rqmc", 16): other}, store="b", field="spatial_functa", train="rqmc@256"))
    cell, summary = summary_of(rows, "rqmc", 16, 256)
    text = format_summary(rows, cell, summary)
    assert ("train --jitter" in text) == hinted
    if hinted:
        assert "spatial_functa fields (b) read 4.0 points lower at the training cell" in text


def test_the_resolution_gap_over_every_point_set_finds_a_collapse_off_the_training_set():
    rows = table({("rqmc", 16): 0.85, ("rqmc", 32): 0.82, ("grid", 16): 0.90, ("grid", 32): 0.40,
                  ("random", 16): 0.238, ("random", 32): 0.20}, train="rqmc@256")
    _, summary = summary_of(rows, "rqmc", 16, 256)
    assert summary["point_set_gap"] == {"value": pytest.approx(61.2), "from": "rqmc", "to": "random",
                                        "resolution": 16}
    assert summary["resolution_gap"]["value"] == pytest.approx(3.0)  # rqmc itself barely moves
    assert summary["resolution_gap_any_point_set"] == {"value": pytest.approx(50.0), "points": "grid", "from": 16,
                                                       "to": 32}  # measured from grid's own cell at 16²
    drops = {(r["test"], r["resolution"]): r["drop"] for r in rows}
    assert drops[("rqmc", 16)] == 0 and drops[("grid", 32)] == pytest.approx(45.0) and drops[("qmc", 16)] is None


def test_an_sdf_error_that_rises_is_a_drop():
    rows = table({("grid", 8): 0.05, ("qmc", 8): 0.08, ("grid", 12): 0.06, ("qmc", 12): 0.04}, metric="sdf_mae",
                 train="rqmc@512", dim=3)
    _, summary = summary_of(rows, "grid", 8, 512, dim=3)
    assert summary["lower_is_better"] and summary["unit"] == "SDF units"
    assert summary["point_set_gap"]["value"] == pytest.approx(0.03) and summary["point_set_gap"]["to"] == "qmc"
    assert summary["resolution_gap"]["value"] == pytest.approx(0.01)
    assert summary["resolution_gap_any_point_set"]["value"] == pytest.approx(0.01)  # qmc's error fell: no drop


def test_a_metrics_direction_and_unit_come_from_its_task_not_its_name():
    # a task of a new metric: an error (lower is better) that no name table knows, and a score in dB
    chamfer = Metric("chamfer", "test_chamfer", higher_is_better=False, fraction=False, unit="mm", label="Chamfer")
    rows = table({("grid", 8): 0.5, ("qmc", 8): 0.75, ("grid", 16): 0.25}, metric="chamfer")
    cell, summary = summary_of(rows, "grid", 8, 64, metric=chamfer)
    assert summary["lower_is_better"] and summary["unit"] == "mm"
    assert summary["point_set_gap"]["value"] == pytest.approx(0.25)  # the error rose by 0.25 mm: a drop
    assert summary["resolution_gap"]["value"] == pytest.approx(-0.25)  # it fell at 16²: a gain
    assert "0.7500 (+0.2500)" in format_table(rows, cell) and "metric: Chamfer;" in legend(rows, cell)
    assert "0.2500 mm (grid → qmc)" in format_summary(rows, cell, summary)
    psnr = Metric("psnr", "test_psnr", higher_is_better=True, fraction=False, unit="dB")
    rows = table({("grid", 8): 30.0, ("qmc", 8): 28.0}, metric="psnr", kinds=("grid", "qmc"))
    cell, summary = summary_of(rows, "grid", 8, 64, metric=psnr)
    assert not summary["lower_is_better"] and summary["point_set_gap"]["value"] == pytest.approx(2.0)  # dB, not ×100
    assert "28.0000 (-2.0000)" in format_table(rows, cell)


def test_gaps_without_the_training_cell_say_why():
    rows = table({("grid", 8): 0.9, ("qmc", 8): 0.8}, kinds=("grid", "qmc"))
    _, summary = summary_of(rows, "rqmc", 8, 64)
    assert summary["point_set_gap"]["why"] == "the training point set, rqmc, is not among --points"
    assert summary["resolution_gap"]["why"] == "the training point set, rqmc, is not among --points"
    rows = table({("grid", 8): 0.9, ("grid", 16): 0.5}, kinds=("grid",))
    _, summary = summary_of(rows, "rqmc", 8, 64)  # other point sets still show their own resolution drops
    assert summary["resolution_gap_any_point_set"]["value"] == pytest.approx(40.0)
    _, summary = summary_of(table({("grid", 8): 0.9}), "rqmc", 8, 64)
    assert summary["point_set_gap"]["why"] == "the network cannot read the training point set, rqmc"
    rows = table({("grid", 8): 0.9})
    for row in rows:  # the limit, not the network, left the training cell empty
        row["time_limit"] = row["accuracy"] is None
    _, summary = summary_of(rows, "rqmc", 8, 64)
    assert summary["point_set_gap"]["why"] == "the training cell was not measured within --max-seconds"
    _, summary = summary_of(table({("grid", 8): 0.9}), "grid", 16, 256)
    assert summary["resolution_gap"]["why"] == "the training resolution, 16, is not among --resolutions"
    _, summary = summary_of(table({("grid", 8): 0.9}), "grid", 8, 64)
    assert "one resolution only" in summary["resolution_gap"]["why"]


def copy_store(source, out, *, noise=0.0, labels=None, shape=None):
    """The fields of `source` written again as a new store: perturbed (as another fit of the same signals
    would be), with other labels, or declaring another signal shape."""
    from fieldlab.store.field_store import FieldStore, FieldStoreWriter

    store = FieldStore(source)
    rows = store.rows()
    params = store.read(rows)
    generator = torch.Generator().manual_seed(1)
    params = {k: t + noise * torch.randn(t.shape, generator=generator) for k, t in params.items()}
    signal = store.signal if shape is None else dataclasses.replace(store.signal, shape=shape)
    writer = FieldStoreWriter.create(out, config=store.config, signal=signal, num_fields=len(rows),
                                     chunk_fields=len(rows), per_field=store.per_field, label_names=store.label_names)
    writer.write_chunk(0, params=params, psnr=np.full(len(rows), 40.0),
                       labels=store.column("labels")[rows] if labels is None else labels,
                       source_index=store.column("source_index")[rows])
    return out


@pytest.fixture(scope="module")
def cnn_run(blob_store, tmp_path_factory):
    """A tiny cnn4 trained on 8² grids of the blob store."""
    run = tmp_path_factory.mktemp("eval_table") / "cnn4"
    train(blob_store, run, TrainConfig(net="cnn4", points="grid", num_points=64, steps=30, batch_size=32, lr=3e-3,
                                       net_options={"channels": 4}, log_every=1000), progress=lambda *_: None)
    return run


def test_eval_prints_and_saves_both_gaps_for_two_stores(cli, cnn_run, blob_store, tmp_path):
    other = copy_store(blob_store, tmp_path / "refit", noise=0.02)
    out = tmp_path / "eval"
    status, text, err = cli(["eval", cnn_run, blob_store, other, "--points", "grid,qmc", "--resolutions", "8,16",
                             "--out", out])
    assert status == 0, err
    saved = json.loads((out / "eval.json").read_text())
    assert saved["training_cell"]["points"] == "grid" and saved["training_cell"]["resolution"] == 8
    assert saved["training_cell"]["store"] == "store" and saved["training_cell"]["trained_on_store"]
    assert len(saved["cells"]) == 2 * 2 * 2 and all("drop" in c for c in saved["cells"])
    cells = {(c["store"], c["test"], c["resolution"]): c for c in saved["cells"]}
    reference = cells[("store", "grid", 8)]["accuracy"]
    collapse = 100 * (reference - cells[("store", "grid", 16)]["accuracy"])
    assert saved["resolution_gap"]["value"] == pytest.approx(collapse) and saved["resolution_gap"]["to"] == 16
    assert saved["point_set_gap"]["value"] is None  # a grid CNN reads no QMC points
    assert f"invariance gap across resolutions, grid: {collapse:.1f} points (grid, 64 → 256 pts)" in text
    assert "invariance gap across point sets at 64 pts: not measured" in text
    assert "[siren fields of store (RUN trained on these)]" in text and "[siren fields of refit]" in text
    assert "train on siren fields (store) → test on siren fields (refit): " in text
    assert [s["store"] for s in saved["stores"]] == ["store", "refit"]
    header = (out / "eval.csv").read_text().splitlines()[0]
    assert header == "store,field,train,test,resolution,points,accuracy,metric,draws,drop"
    if importlib.util.find_spec("matplotlib"):  # the heat map, one panel a store, written as the other pictures
        picture = (out / "eval.png").read_bytes()
        assert picture[:8] == b"\x89PNG\r\n\x1a\n" and picture[picture.index(b"IDAT") + 4:][:2] == b"\x78\x01"
        assert f"and {out / 'eval.png'}" in text and not list(out.glob("*.tmp*"))


def refusal(cli, args, message, out):
    status, text, err = cli([*args, "--out", out])
    assert status == 2 and err.startswith("fieldlab: error:") and len(err.strip().splitlines()) == 1, err
    assert message in err and not out.exists(), err


def test_eval_refuses_stores_of_other_signals_in_one_line(cli, cnn_run, blob_store, tmp_path):
    from fieldlab.store.field_store import FieldStore

    shifted = np.roll(FieldStore(blob_store).column("labels"), 1)
    relabelled = copy_store(blob_store, tmp_path / "relabelled", labels=shifted)
    refusal(cli, ["eval", cnn_run, blob_store, relabelled], "relabelled holds other signals than", tmp_path / "out")
    wider = copy_store(blob_store, tmp_path / "wider", shape=(16, 20))
    refusal(cli, ["eval", cnn_run, blob_store, wider], "16x20", tmp_path / "out")


@pytest.mark.parametrize("args, message", [
    (["--points", "grid,hexagons"], "unknown point set 'hexagons'"),
    (["--resolutions", "8,1"], "--resolutions are grid sides of at least 2"),
    (["--points", "qmc,random"], "reads grids only: it cannot be scored at --points qmc,random"),
])
def test_eval_refuses_bad_options_in_one_line(cli, cnn_run, blob_store, tmp_path, args, message):
    refusal(cli, ["eval", cnn_run, blob_store, *args], message, tmp_path / "out")


def test_eval_at_points_a_grid_cnn_cannot_read_leaves_the_runs_own_table(cli, cnn_run, blob_store):
    """Without --out the table goes to RUN: a refusal must not replace the last good one."""
    cli(["eval", cnn_run, blob_store, "--points", "grid"])
    before = (cnn_run / "eval.json").read_bytes()
    status, _, err = cli(["eval", cnn_run, blob_store, "--points", "qmc"])
    assert status == 2 and "reads grids only" in err and len(err.strip().splitlines()) == 1
    assert (cnn_run / "eval.json").read_bytes() == before


def test_eval_refuses_a_folder_that_is_no_run(cli, blob_store, tmp_path):
    (tmp_path / "notarun").mkdir()
    refusal(cli, ["eval", tmp_path / "notarun", blob_store], "not a finished training run", tmp_path / "out")
    refusal(cli, ["eval", blob_store, blob_store], "not a finished training run", tmp_path / "out")


def test_eval_refuses_a_run_json_whose_training_point_set_is_no_name(cli, cnn_run, blob_store, tmp_path):
    import shutil

    run = shutil.copytree(cnn_run, tmp_path / "run")
    info = json.loads((run / "run.json").read_text())
    info["train"]["points"] = 5
    (run / "run.json").write_text(json.dumps(info))
    refusal(cli, ["eval", run, blob_store], "run.json train: 'points' must be a str", tmp_path / "out")


def test_eval_quiet_shows_no_bar(cli, cnn_run, blob_store, tmp_path):
    shown = cli(["eval", cnn_run, blob_store, "--points", "grid", "--resolutions", "8", "--out", tmp_path / "a"])
    quiet = cli(["eval", cnn_run, blob_store, "--points", "grid", "--resolutions", "8", "--out", tmp_path / "b",
                 "--quiet"])
    assert shown[0] == quiet[0] == 0
    assert shown[1].replace(str(tmp_path / "a"), "OUT") == quiet[1].replace(str(tmp_path / "b"), "OUT")  # one table
    assert shown[2].strip() != "" and quiet[2].strip() == ""
