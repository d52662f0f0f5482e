import pathlib
import pickle
import sys

import numpy as np
import pytest

from fieldlab import UserError
from fieldlab.signals import load_signal
from fieldlab.signals.volume import read_tiff_stack, read_volume, volume_signal, write_volume

import tifffile


def _volume(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.random(shape) < 0.3
    if dtype == np.float32:  # multiples of 1/8 in [-4, 4]: exact through the float64 normalization
        raw = rng.integers(-32, 33, size=shape) / 8
        raw.flat[:2] = [-4, 4]
        return raw.astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -5000), min(info.max, 2 ** 23), size=shape, endpoint=True).astype(dtype)


def _save(path, array):
    np.save(path, array, allow_pickle=False)
    return path


def _decoded(signal):
    return signal.info.normalization.decode(signal.values)


@pytest.mark.parametrize("shape", [(4, 5, 6), (4, 5, 6, 1), (3, 5, 6, 3)])
@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.uint16, np.int64, np.float32])
def test_npy_volumes_round_trip_exactly(tmp_path, dtype, shape):
    raw = _volume(dtype, shape)
    signal = read_volume(_save(tmp_path / "v.npy", raw))
    channels = shape[3] if len(shape) == 4 else 1
    assert signal.info.kind == "volume" and signal.shape == shape[:3] and signal.info.channels == channels
    # Over the data range: the extremes are exactly -1 and 1 (bool's range is its dtype's).
    assert float(signal.values.min()) == -1 and float(signal.values.max()) == 1
    back = _decoded(signal)
    assert back.dtype == dtype and back.shape == shape[:3] + (channels,)
    np.testing.assert_array_equal(back.reshape(shape), raw)


def test_random_float64_volume_is_close(tmp_path):
    raw = np.random.default_rng(1).normal(3.0, 10.0, size=(6, 7, 8))
    signal = read_volume(_save(tmp_path / "v.npy", raw))
    scale = signal.info.normalization.scale
    np.testing.assert_allclose(_decoded(signal)[..., 0], raw, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize("value", [7, -3, 0])
def test_a_constant_integer_volume_sits_at_the_centre_and_decodes_exactly(tmp_path, value):
    """As a constant image: at 0, where a network starts, not at -1, the edge of its range."""
    signal = read_volume(_save(tmp_path / "v.npy", np.full((2, 3, 4), value, np.int16)))
    assert (signal.values == 0).all()
    np.testing.assert_array_equal(_decoded(signal), value)


@pytest.mark.parametrize("shape", [(4, 5, 6), (4, 5, 6, 1), (3, 5, 6, 2)])
def test_write_volume_npy_keeps_the_layout(tmp_path, shape):
    raw = _volume(np.uint16, shape)
    signal = read_volume(_save(tmp_path / "in.npy", raw))
    write_volume(tmp_path / "out.npy", _decoded(signal), signal.info)
    again = np.load(tmp_path / "out.npy", allow_pickle=False)
    assert again.shape == shape and again.dtype == np.uint16
    np.testing.assert_array_equal(again, raw)


@pytest.mark.parametrize("shape, dtype", [((4, 5, 6), np.uint16), ((3, 5, 6, 3), np.uint8),
                                          ((2, 5, 6, 4), np.uint8), ((3, 5, 6, 2), np.float32)])
def test_write_volume_tiff_is_one_page_per_slice(tmp_path, shape, dtype):
    raw = _volume(dtype, shape)
    signal = volume_signal(raw, source="memory")
    write_volume(tmp_path / "out.tif", _decoded(signal), signal.info)
    with tifffile.TiffFile(tmp_path / "out.tif") as tiff:
        assert len(tiff.pages) == shape[0]
    np.testing.assert_array_equal(read_tiff_stack(tmp_path / "out.tif"), raw)


def test_tiff_stacks_are_read_and_single_pages_are_not(tmp_path):
    stack = _volume(np.uint16, (5, 7, 8))
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    np.testing.assert_array_equal(read_tiff_stack(tmp_path / "stack.tif"), stack)
    colour = _volume(np.uint8, (3, 7, 8, 3))
    tifffile.imwrite(tmp_path / "colour.tiff", colour, photometric="rgb")
    np.testing.assert_array_equal(read_tiff_stack(tmp_path / "colour.tiff"), colour)
    for name, page in [("gray.tif", stack[0]), ("rgb.tif", colour[0]), ("one.tif", stack[:1])]:
        tifffile.imwrite(tmp_path / name, page)
        assert read_tiff_stack(tmp_path / name) is None, name


def test_imagej_hyperstack_channels_go_last(tmp_path):
    zcyx = _volume(np.uint8, (3, 2, 5, 6))
    tifffile.imwrite(tmp_path / "ij.tif", zcyx, imagej=True, metadata={"axes": "ZCYX"})
    np.testing.assert_array_equal(read_tiff_stack(tmp_path / "ij.tif"), np.moveaxis(zcyx, 1, -1))


def test_load_signal_tells_a_stack_from_an_image(tmp_path):
    stack = _volume(np.uint16, (4, 7, 8))
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    tifffile.imwrite(tmp_path / "page.tif", stack[0])
    _save(tmp_path / "v.npy", stack)
    for name in ("stack.tif", "v.npy"):
        signal = load_signal(str(tmp_path / name))
        assert signal.info.kind == "volume" and signal.shape == (4, 7, 8), name
    assert load_signal(str(tmp_path / "page.tif")).info.kind == "image"


def test_without_tifffile_pages_are_counted_by_pillow(tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "stack.tif", _volume(np.uint8, (3, 5, 6)), photometric="minisblack")
    tifffile.imwrite(tmp_path / "page.tif", _volume(np.uint8, (5, 6)))
    monkeypatch.setitem(sys.modules, "tifffile", None)
    assert read_tiff_stack(tmp_path / "page.tif") is None
    with pytest.raises(UserError, match=r"tifffile is not installed.*fieldlab\[tiff\]"):
        read_tiff_stack(tmp_path / "stack.tif")


def test_a_corrupt_tiff_is_a_user_error(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00 this is not a tiff")
    with pytest.raises(UserError, match="cannot read .*bad.tif as a TIFF"):
        read_tiff_stack(tmp_path / "bad.tif")


class _Trap:
    """Unpickling this touches a file: proof that a pickle was run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_pickles_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    np.save(tmp_path / "objects.npy", np.array([_Trap(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="objects.npy holds Python objects"):
        read_volume(tmp_path / "objects.npy")
    (tmp_path / "plain.npy").write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(UserError, match="plain.npy is not a .npy array"):
        read_volume(tmp_path / "plain.npy")
    np.savez(tmp_path / "archive.npy", v=np.zeros((2, 2, 2)))
    with pytest.raises(UserError, match="is not a .npy array"):
        read_volume(tmp_path / "archive.npy.npz")
    assert not marker.exists()


@pytest.mark.parametrize("array, message", [
    (np.zeros((0, 4, 4)), "empty"), (np.zeros((4, 4)), "expected a volume"), (np.zeros((2, 2, 2, 2, 2)), "expected"),
    (np.zeros((2, 3, 4, 5)), r"C≤4\), got \(2, 3, 4, 5\)"), (np.full((2, 2, 2), np.nan), "holds NaN at slice 0"),
    (np.array([[[0.0, np.inf]]]), "infinite value at slice 0, row 0, column 1"), (np.zeros((2, 2, 2), np.complex64), "numbers or booleans"),
])
def test_bad_volumes_are_user_errors(tmp_path, array, message):
    with pytest.raises(UserError, match=message):
        read_volume(_save(tmp_path / "bad.npy", array))


def test_truncated_npy_and_bad_output_suffix(tmp_path):
    data = _save(tmp_path / "v.npy", np.zeros((8, 8, 8))).read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:300])
    with pytest.raises(UserError, match="cut.npy is truncated: its header declares 8x8x8"):
        read_volume(tmp_path / "cut.npy")
    signal = volume_signal(np.zeros((2, 2, 2), np.uint8), source="memory")
    with pytest.raises(UserError, match="cannot write a volume as '.raw'"):
        write_volume(tmp_path / "v.raw", _decoded(signal), signal.info)
