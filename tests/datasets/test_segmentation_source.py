"""Cityscapes-style images/ + masks/ folders (signals/sources_segmentation.py) and ImageFolder's train/ + test/
layout as fit-dataset sources."""

import json

import numpy as np
import pytest

from _source_files import FIT, interrupted_then_resumed, refused, write_png, write_segmentation
from fieldlab.signals.datasets import Augmented, open_source

pytestmark = pytest.mark.usefixtures("one_thread")


def test_an_image_and_mask_folder_gives_masks_with_ignored_pixels_as_minus_one(tmp_path):
    masks = write_segmentation(tmp_path)
    (tmp_path / "classes.txt").write_text("road\ncar\nsky\n")
    source = open_source(str(tmp_path))
    assert len(source) == 4 and source.shape == (8, 8) and source.label_names == ["road", "car", "sky"]
    assert (source.labels == -1).all() and source.split is None
    expected = masks["c"].astype(np.int64)
    expected[expected == 255] = -1
    assert np.array_equal(source.masks(2), expected)
    (tmp_path / "classes.txt").unlink()
    assert open_source(str(tmp_path)).label_names == ["0", "1", "2"]  # up to the largest id, 255 aside


def test_images_under_train_and_test_folders_make_the_test_split(tmp_path):
    write_segmentation(tmp_path / "s", names=("train/a", "train/b", "test/c"))
    assert open_source(str(tmp_path / "s")).split.tolist() == [True, False, False]  # sorted: test/c first


def test_fit_dataset_on_a_mask_folder_resumes_and_store_info_names_the_source(tmp_path, cli, monkeypatch):
    write_segmentation(tmp_path / "seg")
    (tmp_path / "seg" / "classes.json").write_text('["road", "car", "sky"]')
    interrupted_then_resumed(cli, monkeypatch, tmp_path / "seg", tmp_path / "S")
    status, out, _ = cli(["store", "info", tmp_path / "S"])
    assert status == 0 and "masks     3 classes (road, car, sky)" in out
    assert f"source    image+mask folder, 4 items, 3 classes, {tmp_path / 'seg'}" in out


def test_an_image_without_its_mask_is_refused(tmp_path, cli):
    write_segmentation(tmp_path / "seg")
    (tmp_path / "seg" / "masks" / "b.png").unlink()
    refused(cli, tmp_path / "seg", f"{tmp_path / 'seg' / 'images' / 'b.png'} has no mask", tmp_path / "S")


def test_a_mask_of_another_size_is_refused(tmp_path, cli):
    write_segmentation(tmp_path / "seg")
    write_png(tmp_path / "seg" / "masks" / "d.png", np.zeros((8, 9), dtype=np.uint8))
    refused(cli, tmp_path / "seg", "d.png is 9x8, but", tmp_path / "S")


def test_a_class_id_that_classes_txt_does_not_name_is_refused(tmp_path, cli):
    write_segmentation(tmp_path / "seg")
    (tmp_path / "seg" / "classes.txt").write_text("road\ncar\n")
    refused(cli, tmp_path / "seg", "holds the class id 2, but classes.txt names only 2 classes", tmp_path / "S")


def test_a_colour_mask_is_refused(tmp_path, cli):
    write_segmentation(tmp_path / "seg")
    write_png(tmp_path / "seg" / "masks" / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    refused(cli, tmp_path / "seg", "is an image of mode RGB; a mask holds one integer class id per pixel", tmp_path / "S")


def image_folder(root, layout):
    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for name, count in classes.items():
            for i in range(count):
                write_png(root / split / name / f"{i}.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))


def test_an_image_folder_with_train_and_test_folders_marks_its_test_items(tmp_path, cli, monkeypatch):
    image_folder(tmp_path / "f", {"train": {"cat": 2, "dog": 1}, "test": {"dog": 1, "emu": 1}})
    source = open_source(str(tmp_path / "f"))
    assert source.label_names == ["cat", "dog", "emu"] and source.labels.tolist() == [0, 0, 1, 1, 2]
    assert source.split.tolist() == [False, False, False, True, True]
    assert Augmented(source).values(range(5)).shape == (5, 36, 3)
    interrupted_then_resumed(cli, monkeypatch, tmp_path / "f", tmp_path / "S")
    status, out, _ = cli(["store", "info", tmp_path / "S"])
    assert "splits train 3, test 2" in out and "source    image folder (train/test), 5 items, 3 classes" in out
    refused(cli, tmp_path / "f", "has its own test split", tmp_path / "T", "--test-fraction", "0.2")


def test_a_folder_whose_classes_are_named_train_and_test_stays_a_plain_image_folder(tmp_path):
    image_folder(tmp_path / "f", {"train": {".": 2}, "test": {".": 1}})
    source = open_source(str(tmp_path / "f"))
    assert source.label_names == ["test", "train"] and source.split is None


def test_a_segmenter_trains_and_scores_on_masks_with_ignored_pixels(tmp_path, cli):
    write_segmentation(tmp_path / "seg", names=("train/a", "train/b", "train/c", "test/d"))
    status, _, err = cli(["fit-dataset", tmp_path / "seg", *FIT, "--copies", "2", "--out", tmp_path / "S"])
    assert status == 0, err
    status, out, err = cli(["train", tmp_path / "S", "--net", "dinet3", "--channels", "4", "--steps", "3",
                            "--batch-size", "2", "--num-points", "16", "--device", "cpu", "--out", tmp_path / "R"])
    assert status == 0, err
    metrics = json.loads((tmp_path / "R" / "run.json").read_text())["metrics"]
    assert 0 <= metrics["test_miou"] <= 1 and metrics["test_fields"] == 2, metrics  # test/d and its copy
