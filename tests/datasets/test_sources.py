"""Dataset sources: built-in sets, NumPy files, ImageFolder layout, deterministic augmentation."""

import numpy as np
import pytest
import torch

from fieldlab._errors import UserError
from fieldlab.signals.datasets import Augmented, augment, open_source


def test_digits_are_all_labelled_8x8():
    source = open_source("sample:digits")
    assert len(source) == 1797 and source.shape == (8, 8) and source.channels == 1
    assert set(source.labels.tolist()) == set(range(10)) and source.label_names[3] == "3"
    values = Augmented(source).values([0, 1, 1796])
    assert values.shape == (3, 64, 1) and values.min() >= -1 and values.max() <= 1
    assert values.min() == -1  # 0 counts map to the bottom of the field range


def test_values_of_many_rows_are_each_items_own_encoding_and_augmentation(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 5, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "set.npz", images=images)
    source = open_source(str(tmp_path / "set.npz"))
    assert source.raw_items is not None and np.array_equal(source.items(np.array([4, 0, 4])), images[[4, 0, 4]])
    rows = [5, 0, 11, 3, 6, 7]  # with 2 copies: items 2, 0, 5, 1, 3, 3; odd rows augmented
    got = Augmented(source, copies=2, seed=9).values(rows)
    one_by_one = []
    for row in rows:
        item, copy = divmod(row, 2)
        image = source.normalization.encode(images[item])
        one_by_one.append((augment(image, copy, (9, item)) if copy else image).reshape(-1, 3))
    assert got.shape == (6, 20, 3) and torch.equal(got, torch.stack(one_by_one))
    lazy = open_source("sample:patches:5")  # a source without raw_items stacks raw(i)
    assert lazy.raw_items is None and np.array_equal(lazy.items(np.array([3, 1])), np.stack([lazy.raw(3), lazy.raw(1)]))


def test_npz_images_are_memory_mapped_where_stored_and_read_where_compressed(tmp_path):
    from fieldlab.signals.datasets import _read_npz

    images = np.random.default_rng(2).random((4, 3, 5, 2)).astype(np.float32)
    fortran = np.asfortranarray(images)
    np.savez(tmp_path / "plain.npz", images=images, labels=np.arange(4))
    np.savez(tmp_path / "fortran.npz", images=fortran)
    np.savez_compressed(tmp_path / "packed.npz", images=images)
    plain, packed = _read_npz(tmp_path / "plain.npz"), _read_npz(tmp_path / "packed.npz")
    assert isinstance(plain["images"], np.memmap) and not isinstance(plain["labels"], np.memmap)
    assert not isinstance(packed["images"], np.memmap)
    mapped_fortran = _read_npz(tmp_path / "fortran.npz")["images"]
    for array in (plain["images"], packed["images"], mapped_fortran):
        assert array.dtype == np.float32 and np.array_equal(array, images)
    rows = [3, 0, 2]
    assert torch.equal(Augmented(open_source(str(tmp_path / "plain.npz"))).values(rows),
                       Augmented(open_source(str(tmp_path / "packed.npz"))).values(rows))


def test_lfw_faces_and_non_faces():
    source = open_source("sample:lfw")
    assert len(source) == 200 and source.shape == (25, 25)
    assert np.bincount(source.labels).tolist() == [100, 100] and source.label_names == ["face", "non-face"]


def test_patches_are_seeded_rgb_crops():
    a, b = open_source("sample:patches:40"), open_source("sample:patches:40")
    assert len(a) == 40 and a.shape == (32, 32) and a.channels == 3
    assert torch.equal(Augmented(a).values(range(40)), Augmented(b).values(range(40)))
    assert a.labels.max() < len(a.label_names) and len(set(a.labels.tolist())) > 1
    with pytest.raises(UserError, match="whole number"):
        open_source("sample:patches:many")


def test_npz_with_labels_and_npy_without(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 6, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "set.npz", images=images, labels=np.array([0, 1, 2, 1, 0]))
    source = open_source(str(tmp_path / "set.npz"))
    assert len(source) == 5 and source.shape == (6, 7) and source.label_names == ["0", "1", "2"]
    raw = source.normalization.decode(Augmented(source).values([3])[0].reshape(6, 7, 3))
    assert np.array_equal(raw, images[3])  # exact round trip through the field range
    np.save(tmp_path / "plain.npy", images[..., 0])
    plain = open_source(str(tmp_path / "plain.npy"))
    assert plain.channels == 1 and (plain.labels == -1).all()
    np.savez(tmp_path / "bad.npz", pictures=images)
    with pytest.raises(UserError, match="no array named images"):
        open_source(str(tmp_path / "bad.npz"))


def test_image_folder_layout(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(1)
    for cls, count in (("cat", 2), ("dog", 3)):
        (tmp_path / "set" / cls).mkdir(parents=True)
        for i in range(count):
            iio.imwrite(tmp_path / "set" / cls / f"{i}.png", rng.integers(0, 256, (9, 9, 3), dtype=np.uint8))
    source = open_source(str(tmp_path / "set"))
    assert source.label_names == ["cat", "dog"] and source.labels.tolist() == [0, 0, 1, 1, 1]
    assert Augmented(source).values(range(5)).shape == (5, 81, 3)
    iio.imwrite(tmp_path / "set" / "dog" / "big.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    with pytest.raises(UserError, match=r"big.png is 12x12, 3 channels, 8 bits, .* must match \(--image-size N resizes"):
        open_source(str(tmp_path / "set"))  # from the headers, before a store is made
    resized = open_source(str(tmp_path / "set"), image_size=8)
    assert Augmented(resized).values(range(len(resized))).shape == (6, 64, 3)


def test_empty_folders_and_fieldlab_outputs_in_a_folder_are_no_classes(tmp_path, cli):
    import imageio.v3 as iio

    rng = np.random.default_rng(1)
    for cls in ("cat", "dog", "empty"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        if cls != "empty":
            iio.imwrite(tmp_path / "set" / cls / "0.png", rng.integers(0, 256, (9, 9, 3), dtype=np.uint8))
    status, _, err = cli(["fit-dataset", tmp_path / "set", "--steps", "2", "--device", "cpu", "--quiet", "--out",
                          tmp_path / "set" / "store"])  # a store written inside the folder it reads
    assert status == 0, err
    (tmp_path / "set" / "store" / "preview.png").write_bytes((tmp_path / "set" / "cat" / "0.png").read_bytes())
    source = open_source(str(tmp_path / "set"))  # neither the empty folder nor the store is a class
    assert source.label_names == ["cat", "dog"] and source.labels.tolist() == [0, 1]


def test_rgb_makes_grey_and_rgba_images_of_a_folder_rgb(tmp_path):
    """A folder mixing grey, grey + alpha, RGBA and RGB images (common in real photo sets) is refused with a
    line naming --rgb; with it, grey is replicated into three equal channels and alpha dropped. --rgb and
    --image-size apply to a folder of image files only: with sample:NAME or a NumPy file they are refused,
    not ignored."""
    import imageio.v3 as iio

    rng = np.random.default_rng(3)
    (tmp_path / "set" / "a").mkdir(parents=True)
    rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    rgba = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "set" / "a" / "0.png", rgb)
    iio.imwrite(tmp_path / "set" / "a" / "1.png", grey)
    iio.imwrite(tmp_path / "set" / "a" / "2.png", np.stack([grey, grey], -1))
    iio.imwrite(tmp_path / "set" / "a" / "3.png", rgba)
    with pytest.raises(UserError, match=r"1.png is 6x5, 1 channel, 8 bits, but .*0.png is 6x5, 3 channels, 8 bits; "
                                         r"images of a dataset must match \(--rgb converts them to RGB\)"):
        open_source(str(tmp_path / "set"))
    source = open_source(str(tmp_path / "set"), rgb=True)
    assert source.channels == 3
    got = source.items(np.arange(4))
    assert np.array_equal(got[0], rgb) and np.array_equal(got[3], rgba[..., :3])
    assert np.array_equal(got[1], np.stack([grey] * 3, -1)) and np.array_equal(got[2], got[1])
    np.savez(tmp_path / "set.npz", images=rng.integers(0, 256, (2, 5, 6, 3), dtype=np.uint8))
    for spec in ("sample:digits", str(tmp_path / "set.npz")):
        with pytest.raises(UserError, match="--rgb applies to a folder of image files"):
            open_source(spec, rgb=True)
        with pytest.raises(UserError, match="--image-size applies to a folder of image files"):
            open_source(spec, image_size=4)


def test_a_folder_mixing_bit_depths_is_refused_from_the_headers(tmp_path):
    """An 8-bit and a 16-bit PNG in one folder: refused when the source opens (before a store is made), not
    half-way through the fitting."""
    import imageio.v3 as iio

    rng = np.random.default_rng(4)
    (tmp_path / "set" / "a").mkdir(parents=True)
    iio.imwrite(tmp_path / "set" / "a" / "0.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    iio.imwrite(tmp_path / "set" / "a" / "1.png", rng.integers(0, 65536, (4, 4), dtype=np.uint16))
    with pytest.raises(UserError, match=r"1.png is 4x4, 1 channel, 16 bits, but .* 8 bits; .*one bit depth"):
        open_source(str(tmp_path / "set"))


def test_a_flat_folder_of_images_is_unlabelled_and_a_mixed_one_is_refused(tmp_path):
    """Images lying flat in the folder are items labelled -1 (as clips, volumes and meshes are); hidden files
    (macOS's ._ copies) are not items; images both beside and in class folders are one line."""
    import imageio.v3 as iio

    rng = np.random.default_rng(2)
    (tmp_path / "photos").mkdir()
    for i in range(3):
        iio.imwrite(tmp_path / "photos" / f"{i}.png", rng.integers(0, 256, (6, 7, 3), dtype=np.uint8))
    (tmp_path / "photos" / "._0.png").write_bytes(b"not an image")
    source = open_source(str(tmp_path / "photos"))
    assert source.labels.tolist() == [-1, -1, -1] and source.label_names == [] and source.shape == (6, 7)
    assert Augmented(source).values(range(3)).shape == (3, 42, 3)
    (tmp_path / "photos" / "cats").mkdir()
    iio.imwrite(tmp_path / "photos" / "cats" / "a.png", rng.integers(0, 256, (6, 7, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="both beside its class folders"):
        open_source(str(tmp_path / "photos"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no images"):
        open_source(str(tmp_path / "empty"))


def test_unknown_sources_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="sample:digits"):
        open_source("sample:cifar")
    with pytest.raises(UserError, match="no such dataset"):
        open_source(str(tmp_path / "missing"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UserError, match="not a dataset"):
        open_source(str(tmp_path / "x.txt"))


def test_augmentation_is_deterministic_per_row():
    source = open_source("sample:lfw")
    rows = Augmented(source, copies=3, seed=5)
    assert len(rows) == 600 and rows.item(7) == (2, 1)
    first, again = rows.values([6, 7, 8]), rows.values([8, 7, 6])
    assert torch.equal(first, again.flip(0))  # a row's copy does not depend on what is read with it
    original = Augmented(source).values([2])[0]
    assert torch.equal(first[0], original) and not torch.equal(first[1], original)
    assert not torch.equal(rows.values([7]), Augmented(source, copies=3, seed=6).values([7]))
    assert rows.columns([6, 7, 8])["augment"].tolist() == [0, 1, 2]


def test_augment_flips_and_crops_within_range():
    image = torch.linspace(-1, 1, 16).reshape(4, 4, 1).repeat(1, 1, 2)
    outs = [augment(image, copy, (0, 0)) for copy in range(1, 20)]
    assert all(o.shape == image.shape and o.abs().max() <= 1 for o in outs)
    # Some copies are mirrored: their columns decrease left to right.
    assert any((o[:, 0] > o[:, -1]).all() for o in outs) and any((o[:, 0] < o[:, -1]).all() for o in outs)
