"""Stores and runs prove their integrity: chunk checksums recorded and checked, attributes validated, run
folders and checkpoints checked before anything is written; every refusal is one line and exit 2."""

import json
import shutil

import numpy as np
import pytest
import torch

from fieldlab._errors import UserError
from fieldlab.fields import FieldStack, make_config
from fieldlab.signals import Normalization, SignalInfo
from fieldlab.store import _integrity
from fieldlab.store.field_store import FieldStore, FieldStoreDataset, FieldStoreWriter

CONFIG = make_config("siren", in_dim=2, out_dim=1, hidden_dim=6, num_layers=2)
SIGNAL = SignalInfo("image", (4, 4), 1, Normalization("uint8", 0.0, 255.0), ((0.0, 4.0), (0.0, 4.0)))
WEIGHT = "params/layers.0.weight"


def make_store(path, chunks=(0, 1, 2), psnr=None):
    """A 10-field store in chunks of 4 rows, with `chunks` written."""
    stack = FieldStack.from_config(CONFIG, 10)
    params = {k: v.detach() for k, v in stack.state()[0].items()}
    writer = FieldStoreWriter.create(path, config=CONFIG, signal=SIGNAL, num_fields=10, chunk_fields=4,
                                     per_field={k: tuple(v.shape[1:]) for k, v in params.items()},
                                     label_names=["a", "b"], split_names=("train", "test"))
    for chunk in chunks:
        rows = np.asarray(writer.chunk_rows(chunk))
        writer.write_chunk(chunk, params={k: v[rows] for k, v in params.items()},
                           psnr=30.0 + rows if psnr is None else psnr[rows], labels=rows % 2, split=rows % 5 == 4)
    return writer


def chunk_file(store, name, chunk):
    """The file of row-chunk `chunk` of array `name`, where the store's own integrity check looks for it."""
    return _integrity.chunk_file(store, FieldStore(store).group, name, chunk)


def expect_one_line(cli, args, *match):
    status, out, err = cli(args)
    assert status == 2 and err.startswith("fieldlab: error:") and err.count("\n") == 1, (status, err)
    for text in match:
        assert text in err, err
    return out, err


def edit_attrs(store, *remove, **changes):
    """Rewrite the store's attributes by hand, as a crafted store would: in zarr.json (zarr 3) or .zattrs (2)."""
    v3 = (store / "zarr.json").is_file()
    file = store / ("zarr.json" if v3 else ".zattrs")
    meta = json.loads(file.read_text())
    attrs = meta["attributes"] if v3 else meta
    attrs.update(changes)
    for key in remove:
        del attrs[key]
    file.write_text(json.dumps(meta))


# -- checksums --------------------------------------------------------------------------------------
def test_a_deleted_chunk_is_refused_as_missing_not_read_as_zeros(tmp_path, cli):
    make_store(tmp_path / "S")
    chunk_file(tmp_path / "S", WEIGHT, 1).unlink()
    store = FieldStore(tmp_path / "S")
    store.read([0, 1])  # chunk 0 is sound
    with pytest.raises(UserError, match=f"chunk 1 of {WEIGHT} is missing; run fit-dataset with --resume"):
        store.read([5])
    with pytest.raises(UserError, match="is missing"):
        FieldStoreDataset(store)[5]
    out, _ = expect_one_line(cli, ["store", "info", tmp_path / "S", "--verify"], "1 of 3 chunks are damaged")
    assert f"chunk 1 of {WEIGHT} is missing" in out


def test_a_changed_chunk_fails_its_checksum(tmp_path):
    make_store(tmp_path / "S")
    shutil.copyfile(chunk_file(tmp_path / "S", WEIGHT, 0), chunk_file(tmp_path / "S", WEIGHT, 1))
    with pytest.raises(UserError, match=f"chunk 1 of {WEIGHT} is damaged \\(checksum mismatch\\)"):
        FieldStore(tmp_path / "S").read(slice(4, 8))


def test_a_garbage_chunk_is_one_line_not_a_traceback(tmp_path, cli):
    make_store(tmp_path / "S")
    chunk_file(tmp_path / "S", WEIGHT, 2).write_bytes(np.random.default_rng(0).bytes(200))
    chunk_file(tmp_path / "S", "labels", 0).write_bytes(b"\x28\xb5\x2f\xfd garbage zstd")
    out, _ = expect_one_line(cli, ["store", "info", tmp_path / "S", "--verify"], "2 of 3 chunks")
    assert "chunk 2 of params/layers.0.weight is damaged (unreadable" in out and "chunk 0 of labels" in out
    expect_one_line(cli, ["store", "info", tmp_path / "S"], "chunk 0 of labels is damaged")


def test_resume_refits_a_chunk_that_fails_its_checksum(tmp_path, cli):
    writer = make_store(tmp_path / "S")
    assert writer.pending_chunks() == []
    chunk_file(tmp_path / "S", WEIGHT, 1).unlink()
    resumed = FieldStoreWriter.open(tmp_path / "S")
    assert resumed.pending_chunks() == [1]
    rows = np.asarray(resumed.chunk_rows(1))
    fresh = FieldStack.from_config(CONFIG, 4).state()[0]
    resumed.write_chunk(1, params={k: v.detach() for k, v in fresh.items()}, psnr=30.0 + rows)
    assert resumed.pending_chunks() == []
    status, out, _ = cli(["store", "info", tmp_path / "S", "--verify"])
    assert status == 0 and "verify    OK: all 3 chunks of every array match their checksums" in out


def test_an_older_store_without_checksums_is_read_as_before(tmp_path, cli):
    make_store(tmp_path / "S")
    edit_attrs(tmp_path / "S", "checksums")
    shutil.rmtree(tmp_path / "S" / "checksums")
    assert FieldStore(tmp_path / "S").read([9])["layers.0.weight"].shape == (1, 6, 2)
    status, out, _ = cli(["store", "info", tmp_path / "S", "--verify"])
    assert status == 0 and "checksums none (an older store" in out and "chunks of every array decode" in out


# -- non-finite fields --------------------------------------------------------------------------------
def test_write_chunk_refuses_non_finite_params_naming_the_rows(tmp_path):
    writer = make_store(tmp_path / "S", chunks=())
    params = {k: v.detach()[:4].clone() for k, v in FieldStack.from_config(CONFIG, 4).state()[0].items()}
    params["layers.1.weight"][1, 0, 0] = float("nan")
    params["layers.0.bias"][3, 0] = float("inf")
    with pytest.raises(UserError, match="rows 1, 3 \\(2 of chunk 0\\) have non-finite parameters"):
        writer.write_chunk(0, params=params, psnr=np.zeros(4))
    assert writer.pending_chunks() == [0, 1, 2] and not FieldStore(tmp_path / "S").rows().size


def test_store_info_counts_nan_psnrs_of_an_older_store(tmp_path, cli):
    make_store(tmp_path / "S", psnr=np.r_[np.full(3, np.nan), np.full(7, 30.0)])
    assert FieldStore(tmp_path / "S").summary()["nan_psnr"] == 3
    status, out, _ = cli(["store", "info", tmp_path / "S"])
    assert status == 0 and "3 complete fields have a NaN PSNR" in out


# -- attributes ------------------------------------------------------------------------------------------
def config_with(**options):
    return {"name": "siren", "config": {**CONFIG.to_dict(), **options}}


@pytest.mark.parametrize("changes, match", [
    ({"num_fields": "10"}, "'num_fields' must be a int"),
    ({"num_fields": 10.5}, "'num_fields' must be a int"),
    ({"num_fields": 10**12}, "num_fields must be between 1 and 1,000,000,000"),
    ({"num_fields": 8}, "its attributes declare 8"),
    ({"chunk_fields": 5}, "in chunks of 5"),
    ({"per_field": {"../layers.0.weight": [6, 2]}}, "'../layers.0.weight' is not a valid name"),
    ({"split_names": ["train", "../../etc"]}, "the split '../../etc' is not a valid name"),
    ({"label_names": [1, 2]}, "label_names must be a list of names"),
    ({"shared": ["..", "x"]}, "is not a valid name"),
    ({"field": config_with(hidden_dim=30_000)}, "zarr.json field"),
    ({"field": config_with(hidden_dim=10**9)}, "zarr.json field"),
    ({"field": config_with(num_layers="many")}, "--num-layers"),
    ({"field": {"name": "nope", "config": {}}}, "nope"),
    ({"signal": {"kind": "image", "shape": 4}}, "signal is damaged"),
    ({"format_version": "one"}, "format_version must be a whole number"),
    ({"checksums": {"algorithm": "md5", "arrays": []}}, "'md5' checksums"),
])
def test_crafted_store_attributes_are_refused_in_one_line(tmp_path, cli, changes, match):
    make_store(tmp_path / "S", chunks=(0,))
    edit_attrs(tmp_path / "S", **changes)
    with pytest.raises(UserError, match=match.replace("(", "\\(").replace(".", "\\.")):
        FieldStore(tmp_path / "S")
    expect_one_line(cli, ["store", "info", tmp_path / "S"])


# -- run folders -----------------------------------------------------------------------------------------
TINY = dict(net="mlp", net_options={"hidden": 8}, steps=2, num_points=16, batch_size=4, log_every=1000)


@pytest.fixture
def run(tmp_path):
    """A finished 2-step run of an MLP on the weights of a 10-field store (tmp_path/S), and that store."""
    from fieldlab.learn.train import TrainConfig, train

    make_store(tmp_path / "S")
    train(tmp_path / "S", tmp_path / "run", TrainConfig(**TINY), progress=lambda *_: None)
    return tmp_path / "run", tmp_path / "S"


def test_a_garbage_net_safetensors_is_refused_in_one_line(run, cli):
    folder, store = run
    (folder / "net.safetensors").write_bytes(b"\xff" * 16 + np.random.default_rng(1).bytes(300))
    expect_one_line(cli, ["eval", folder, store, "--points", "qmc"], "net.safetensors is damaged")


@pytest.mark.parametrize("content, match", [
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "run.json is damaged"),
    (b"[1, 2]", "holds a list, not a dict"),
    ({"classes": "2"}, "'classes' must be a int"),
    ({"classes": 10**12}, "classes must be between 1"),
    ({"in_channels": 1.5}, "'in_channels' must be a int"),
    ({"net_options": {"hidden": 10**9}}, "parameter count must be between 1 and 1,000,000,000"),
    ({"net_options": {"hidden": 30_000}}, "does not fit the fields"),
    ({"train": []}, "'train' must be a dict"),
])
def test_a_crafted_run_json_is_refused_in_one_line(run, cli, content, match):
    folder, store = run
    if isinstance(content, dict):
        content = json.dumps({**json.loads((folder / "run.json").read_text()), **content}).encode()
    (folder / "run.json").write_bytes(content)
    expect_one_line(cli, ["eval", folder, store, "--points", "qmc"], match)


def crafted_checkpoints(real):
    wrong_shape = {**real, "net": {k: torch.zeros(3) for k in real["net"]}}
    with_nan = {**real, "net": {k: t.clone().fill_(float("nan")) if t.is_floating_point() else t
                                for k, t in real["net"].items()}}
    moments = {**real["optimizer"], "state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(7)}}}
    return {"garbage": b"PK\x03\x04 not a zip", "a list": [1, 2], "no step": {**real, "step": None},
            "a step past --steps": {**real, "step": 10**9}, "another network": {**real, "net": {"w": torch.zeros(2)}},
            "wrong shapes": wrong_shape, "NaN weights": with_nan, "wrong moments": {**real, "optimizer": moments}}


@pytest.mark.parametrize("case", list(crafted_checkpoints({"net": {}, "optimizer": {"state": {}}})))
def test_resume_on_a_crafted_checkpoint_is_refused_before_the_run_is_written(tmp_path, cli, case):
    from fieldlab.learn.train import TrainConfig, train

    make_store(tmp_path / "S")
    folder = tmp_path / "run"
    train(tmp_path / "S", folder, TrainConfig(**TINY), progress=lambda *_: None, stop_at=1)
    crafted = crafted_checkpoints(torch.load(folder / "checkpoint.pt", weights_only=True))[case]
    if isinstance(crafted, bytes):
        (folder / "checkpoint.pt").write_bytes(crafted)
    else:
        torch.save(crafted, folder / "checkpoint.pt")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    expect_one_line(cli, ["train", tmp_path / "S", "--out", folder, "--net", "mlp", "--hidden", "8", "--steps", "2",
                          "--num-points", "16", "--batch-size", "4", "--lr", "0.01", "--resume"], "checkpoint.pt")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()} == before
