"""benchmarks/dinet_sweep.py --cut band: a validation band of rows above the test band, placed by the crop
positions photo_patches.py records and matched to the store's rows at --export."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PATCHES = ROOT / "benchmarks" / "protocols" / "photo_patches.py"



def test_the_band_is_derived_from_the_photo_height_and_crop_size(sweep):
    assert sweep.band_limits(512, 32) == (240, 272)  # BENCHMARKS.md's band: fit tops ≤ 240, validation ≥ 272
    assert sweep.band_limits(256, 32) == (48, 80)  # test band from row 192: validation rows 80–191
    last_fit, first_val = sweep.band_limits(1000, 32)
    assert first_val == 750 - 112 and last_fit + 32 == first_val  # no fit pixel in a validation crop


def sweep_split(n):
    from fieldlab.learn.train import Split

    return Split(np.arange(n), {"w": torch.arange(n, dtype=torch.float32)[:, None]}, torch.zeros(n, dtype=torch.long))


def test_a_band_cut_keeps_fit_crops_clear_of_validation_rows(sweep, tmp_path):
    tops = [0, 240, 241, 271, 272, 352, 100, 300]
    (tmp_path / "fields.json").write_text(json.dumps({"source": {"files_sha1": "abc"}}))
    (tmp_path / "positions.json").write_text(json.dumps({
        "files_sha1": "abc", "train": len(tops), "test": 0, "split": ["train"] * len(tops), "top": tops, "left": [0] * len(tops),
        "height": [512] * len(tops), "width": [512] * len(tops), "size": [32] * len(tops)}))
    fit, val = sweep.band_cut(sweep_split(len(tops)), tmp_path)
    assert fit.rows.tolist() == [0, 1, 6] and val.rows.tolist() == [4, 5, 7]  # tops 241 and 271 are dropped
    assert fit.params["w"][:, 0].tolist() == [0, 1, 6] and len(val.labels) == 3
    # positions of another export (its file list differs from the store's) are refused
    (tmp_path / "fields.json").write_text(json.dumps({"source": {"files_sha1": "other"}}))
    with pytest.raises(SystemExit):
        sweep.band_cut(sweep_split(len(tops)), tmp_path)


def test_band_cut_of_a_store_without_positions_is_one_line_and_exit_2(sweep, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        sweep.band_cut(sweep_split(4), tmp_path)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cut band" in err[0] and "positions.json" in err[0]


def test_export_matches_the_stores_rows_to_the_recorded_crops(sweep, tmp_path):
    """A real store of photo_patches crops: each exported row's position gives a crop of its own class, and the
    exported train rows are the store's train crops in the order export writes them."""
    from PIL import Image

    from fieldlab.cli import main as cli
    from fieldlab.learn.train import split_rows
    from fieldlab.store.field_store import FieldStore

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (128, 40, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    patches, store, data = tmp_path / "patches", tmp_path / "store", tmp_path / "data"
    subprocess.run([sys.executable, str(PATCHES), "--images", str(tmp_path / "*.png"), "--out", str(patches),
                    "--train-per-photo", "6", "--test-per-photo", "2"], check=True, capture_output=True)
    fit = ["--field", "siren", "--steps", "2", "--hidden-dim", "8", "--chunk-fields", "4", "--device", "cpu", "--quiet"]
    assert cli(["fit-dataset", str(patches), "--out", str(store), *fit]) in (0, None)
    sweep.export(str(store), data)
    sweep.write_positions(str(store), data)
    positions = json.loads((data / "positions.json").read_text())
    assert (positions["train"], positions["test"]) == (12, 4)
    assert positions["split"] == ["train"] * 12 + ["test"] * 4
    opened = FieldStore(str(store))
    train_rows, test_rows, _ = split_rows(opened)
    labels = opened.column("labels")[np.concatenate([train_rows, test_rows])]
    classes = opened.attrs["source"]["classes"]
    assert [f.split("/")[1] for f in positions["file"]] == [classes[k] for k in labels]
    # the stored crop at each row is the file recorded for it (a store's row order is not the csv's)
    from fieldlab.signals.datasets import open_source

    source = open_source(str(patches))
    item = opened.column("source_index")[np.concatenate([train_rows, test_rows])]
    for row, file in zip(item, positions["file"]):
        assert np.array_equal(source.items(np.array([row]))[0],
                              np.asarray(Image.open(patches / file).convert("RGB")))
