import csv
import json

import numpy as np
import torch

from fieldlab.learn.segment import confusion, labels_at, miou
from fieldlab.signals.datasets import open_source
from fieldlab.signals.shapes import shapes_scene


def test_shapes_scenes_are_seeded_and_masks_match_images():
    a, b = shapes_scene(7), shapes_scene(7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    image, mask = a
    assert mask.max() >= 1 and set(np.unique(mask)) <= {0, 1, 2, 3}
    assert image[mask > 0].min() > image[mask == 0].max()  # shapes are brighter than the background
    source = open_source("sample:shapes:20")
    assert source.label_names == ["background", "disc", "square", "triangle"] and (source.labels == -1).all()
    assert np.array_equal(source.masks(7), mask)


def test_labels_at_points_and_miou():
    masks = torch.arange(4).reshape(1, 2, 2)  # pixel (i, j) has class 2i + j
    coords = torch.tensor([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.99, 0.99], [1.0, 1.0]])
    assert labels_at(masks, coords).tolist() == [[0, 1, 2, 3, 3]]
    truth = torch.tensor([0, 0, 1, 1])
    assert miou(confusion(truth, truth, 2)) == 1.0
    assert abs(miou(confusion(torch.tensor([0, 0, 0, 1]), truth, 2)) - (2 / 3 + 1 / 2) / 2) < 1e-9


def test_train_dinet3_on_shapes_beats_background(cli, tmp_path):
    store, run = tmp_path / "store", tmp_path / "run"
    status, out, err = cli(["fit-dataset", "sample:shapes:100", "--field", "siren", "--out", store, "--steps", 200,
                            "--hidden-dim", 32, "--num-layers", 3])
    assert status == 0, err
    status, out, err = cli(["train", store, "--net", "dinet3", "--out", run, "--num-points", 256, "--steps", 120,
                            "--batch-size", 32, "--lr", 3e-3, "--channels", 16])
    assert status == 0, err
    assert "test mIoU" in out
    metrics = json.loads((run / "run.json").read_text())["metrics"]

    # trivial baseline: every point called background, scored on the same test scenes (every 5th item)
    from fieldlab.learn.train import split_rows
    from fieldlab.store.field_store import FieldStore
    from fieldlab.learn.segment import store_masks

    _, test_rows, _ = split_rows(FieldStore(store))
    truth = store_masks(FieldStore(store), test_rows)
    baseline = miou(confusion(torch.zeros_like(truth), truth, 4))
    assert metrics["test_miou"] > baseline + 0.1, f"DI-Net-3 mIoU {metrics['test_miou']:.3f} vs background-only {baseline:.3f}"

    status, out, err = cli(["eval", run, store, "--points", "grid,qmc,shrunk", "--resolutions", "16"])
    assert status == 0, err
    rows = list(csv.DictReader(open(run / "eval.csv")))
    assert {r["metric"] for r in rows} == {"miou"}
    assert all(float(r["accuracy"]) > baseline for r in rows), (rows, baseline)


def test_segmenter_refuses_a_store_without_masks(cli, blob_store, tmp_path):
    status, out, err = cli(["train", blob_store, "--net", "dinet3", "--out", tmp_path / "r", "--steps", 2])
    assert status == 2 and "mask" in err and "\n" not in err.strip()


def test_augmented_rows_get_the_same_flip_and_crop_as_their_images():
    from fieldlab.learn.segment import store_masks
    from fieldlab.signals.datasets import Augmented

    rows_of = Augmented(open_source("sample:shapes:10"), copies=3, seed=5)
    columns = rows_of.columns(np.arange(30))

    class Store:  # what store_masks reads of a FieldStore
        attrs = {"source": {"spec": "sample:shapes:10"}, "seed": 5}

        def column(self, name):
            return columns[name]

    rows = np.arange(30)
    masks = store_masks(Store(), rows)
    images = rows_of.values(rows).reshape(30, 16, 16)
    inside, outside = images[masks > 0], images[masks == 0]
    # bilinear resampling blurs edges, so compare typical levels: shapes ≥ 0.55 raw, background ≤ 0.25 raw
    assert inside.median() > 0.0 > outside.median(), (inside.median(), outside.median())
    agree = ((images > 0) == (masks > 0)).float().mean()
    assert agree > 0.9, f"only {agree:.2f} of pixels agree between augmented images and masks"


def test_npz_with_masks_is_a_segmentation_source(tmp_path):
    from fieldlab._errors import UserError
    from fieldlab.signals.shapes import shapes_scenes

    images, masks = shapes_scenes(6)
    np.savez(tmp_path / "seg.npz", images=images, masks=masks)
    source = open_source(str(tmp_path / "seg.npz"))
    assert np.array_equal(source.masks(4), masks[4]) and source.label_names == ["0", "1", "2", "3"]
    np.savez(tmp_path / "bad.npz", images=images, masks=masks[:, :8])
    try:
        open_source(str(tmp_path / "bad.npz"))
        raise AssertionError("mismatched masks were accepted")
    except UserError as error:
        assert "masks must be" in str(error)
