"""Dataset sources refuse broken data (issue 19): `fieldlab fit-dataset` exits 2 with one line, writing nothing."""

import struct
import zipfile

import numpy as np
import pytest

from fieldlab._errors import UserError
from fieldlab.signals.datasets import open_source


def refused(cli, tmp_path, source, message, *extra):
    out = tmp_path / "store"
    status, _, err = cli(["fit-dataset", source, "--field", "siren", "--steps", "1", "--limit", "2", "--device", "cpu",
                          "--out", out, *extra])
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("fieldlab: error:") and message in err, err
    assert not out.exists()


def _images(n=4):
    return np.random.default_rng(0).random((n, 6, 5)).astype(np.float32)


def test_one_nan_in_an_npz_is_refused_naming_item_and_pixel(cli, tmp_path):
    images = _images()
    images[2, 3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", images=images)
    refused(cli, tmp_path, tmp_path / "nan.npz", "images holds NaN at item 2, row 3, column 1, channel 0")


def test_one_inf_in_an_npz_is_refused_instead_of_flattening_the_other_images(tmp_path):
    images = _images()
    images[1, 0, 0] = np.inf
    np.savez(tmp_path / "inf.npz", images=images)
    with pytest.raises(UserError, match="infinite value at item 1, row 0, column 0"):
        open_source(str(tmp_path / "inf.npz"))


def test_an_npz_with_object_arrays_is_refused(cli, tmp_path):
    np.savez(tmp_path / "obj.npz", images=np.array([_images(1)[0], None], dtype=object))
    refused(cli, tmp_path, tmp_path / "obj.npz", "holds Python objects")


def test_string_labels_become_named_classes(tmp_path):
    np.savez(tmp_path / "s.npz", images=_images(), labels=np.array(["dog", "cat", "dog", "emu"]))
    source = open_source(str(tmp_path / "s.npz"))
    assert source.label_names == ["cat", "dog", "emu"] and source.labels.tolist() == [1, 0, 1, 2]
    np.savez(tmp_path / "n.npz", images=_images(), labels=np.array(["dog", "cat", "dog", "emu"]),
             label_names=np.array(["dog", "cat"]))
    with pytest.raises(UserError, match="the label 'emu' of item 3 is not in label_names"):
        open_source(str(tmp_path / "n.npz"))


def test_integer_labels_past_their_names_are_refused(tmp_path):
    np.savez(tmp_path / "i.npz", images=_images(), labels=np.array([0, 1, 2, 1]), label_names=np.array(["x", "y"]))
    with pytest.raises(UserError, match=r"labels reach class 2 \(item 2\), but label_names names 2 classes"):
        open_source(str(tmp_path / "i.npz"))
    np.savez(tmp_path / "ok.npz", images=_images(), labels=np.array([0, 1, 1, 0]), label_names=np.array(["x", "y", "z"]))
    assert open_source(str(tmp_path / "ok.npz")).label_names == ["x", "y", "z"]  # a class without items is fine


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1, 10**12, 1]), "the label 1000000000000 of item 2 is not a class index"),
    (np.array([0, -2, 1, 1]), "the label -2 of item 1"),
    (np.array([0.0, 1.0, 0.5, 1.0]), "labels must be integers"),
    (np.array([0, 1, 2]), "labels must be 4 values, one per image"),
    (np.array([0, 1, 2**30, 0]), "more than 1,048,576 classes"),
])
def test_bad_labels_are_refused(cli, tmp_path, labels, message):
    np.savez(tmp_path / "l.npz", images=_images(), labels=labels)
    refused(cli, tmp_path, tmp_path / "l.npz", message)


def test_mismatched_masks_and_wrong_dims_are_refused(tmp_path):
    np.savez(tmp_path / "m.npz", images=_images(), masks=np.zeros((3, 6, 5), np.int64))
    with pytest.raises(UserError, match="masks must be non-negative integers shaped"):
        open_source(str(tmp_path / "m.npz"))
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 3, 4, 5, 6)))
    with pytest.raises(UserError, match=r"expected images shaped \(N, H, W\)"):
        open_source(str(tmp_path / "d.npz"))


def test_a_truncated_npz_is_refused(cli, tmp_path):
    np.savez(tmp_path / "a.npz", images=_images(), labels=np.arange(4))
    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    refused(cli, tmp_path, tmp_path / "cut.npz", "cannot read")


def _huge_npy_header(shape=(10**6, 10**4, 10**4)):
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - len(header) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


def test_npy_and_npz_declaring_huge_shapes_are_refused_before_allocating(cli, tmp_path):
    (tmp_path / "huge.npy").write_bytes(_huge_npy_header())
    refused(cli, tmp_path, tmp_path / "huge.npy", "declares an array of 1000000x10000x10000")
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.writestr("images.npy", _huge_npy_header((100, 100, 100)))  # 4 MB declared, none held
    refused(cli, tmp_path, tmp_path / "huge.npz", "images is truncated: its header declares 100x100x100")


def test_a_million_patches_with_limit_2_cut_only_what_is_asked(monkeypatch):
    source = open_source("sample:patches:1000000")
    assert len(source) == 10**6 and source.raw(999_999).shape == (32, 32, 3)
    with pytest.raises(UserError, match="between 1 and 1000000"):
        open_source("sample:patches:10000000")
    shapes = open_source("sample:shapes:1000000")  # scenes are drawn when asked for: instant
    assert shapes.raw(123_456).shape == (16, 16, 1) and shapes.masks(123_456).shape == (16, 16)


def test_image_size_is_bounded(cli, tmp_path):
    (tmp_path / "set" / "a").mkdir(parents=True)
    refused(cli, tmp_path, tmp_path / "set", "--image-size must be between 1 and 16,384", "--image-size", "100000")
