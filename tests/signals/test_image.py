import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fieldlab import UserError
from fieldlab.signals import Normalization, load_signal, write_image


def _write(path, array):
    if path.suffix == ".png":
        write_image(path, array if array.ndim == 3 else array[..., None])  # pypng for 16-bit colour
    else:
        iio.imwrite(path, array)
    return str(path)


@pytest.mark.parametrize("shape", [(9, 11), (9, 11, 3), (9, 11, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_gray_rgb_rgba_8_and_16_bit_round_trip_exactly(tmp_path, shape, dtype):
    raw = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    signal = load_signal(_write(tmp_path / "x.png", raw))
    channels = shape[2] if len(shape) == 3 else 1
    assert signal.shape == (9, 11) and signal.info.channels == channels
    assert signal.values.min() >= -1 and signal.values.max() <= 1
    back = signal.info.normalization.decode(signal.values)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back.reshape(raw.shape), raw)


def test_jpeg_and_tiff_are_read(tmp_path):
    raw = (np.random.default_rng(1).random((16, 20, 3)) * 255).astype(np.uint8)
    jpeg = load_signal(_write(tmp_path / "x.jpg", raw))
    assert jpeg.shape == (16, 20) and jpeg.info.channels == 3
    raw16 = (np.random.default_rng(2).random((16, 20)) * 65535).astype(np.uint16)
    tiff = load_signal(_write(tmp_path / "x.tif", raw16))
    np.testing.assert_array_equal(tiff.info.normalization.decode(tiff.values)[..., 0], raw16)


def test_normalization_is_stored_and_exact_for_floats():
    raw = np.linspace(-3.5, 7.25, 50).reshape(5, 10, 1)
    norm = Normalization.for_array(raw)
    values = norm.encode(raw)
    assert float(values.min()) == -1 and float(values.max()) == 1
    np.testing.assert_allclose(norm.decode(values), raw, atol=1e-5 * norm.scale)  # float32 values
    assert Normalization(**norm.to_dict()) == norm


def test_max_size_downsamples_with_anti_aliasing():
    full = load_signal("sample:camera")
    small = load_signal("sample:camera", max_size=64)
    assert full.shape == (512, 512) and small.shape == (64, 64)
    # Anti-aliasing: each small pixel is close to the mean of its 8×8 block, not to one sample of it.
    blocks = full.values[..., 0].reshape(64, 8, 64, 8).mean(dim=(1, 3))
    assert torch.mean((small.values[..., 0] - blocks).abs()) < 0.03
    assert small.info.normalization.dtype == "uint8"


def test_non_square_max_size_keeps_aspect():
    assert load_signal("sample:coffee", max_size=60).shape == (40, 60)


def test_samples_and_unknown_sample():
    assert load_signal("sample:astronaut", max_size=16).info.channels == 3
    with pytest.raises(UserError, match="unknown sample 'nope'.*astronaut"):
        load_signal("sample:nope")


@pytest.mark.parametrize("content, message", [
    (None, "no such file"), (b"", "is empty"), (b"not an image at all", "cannot read"),
])
def test_bad_files_are_user_errors(tmp_path, content, message):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_signal(str(path))


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "data.xyz"
    path.write_text("1 2 3")  # an unknown suffix
    with pytest.raises(UserError, match="unsupported file type"):
        load_signal(str(path))


def test_16_bit_colour_png_keeps_its_16_bits(tmp_path):
    """Pillow alone would read this as 8-bit: the reader must not."""
    import png

    raw = np.random.default_rng(3).integers(0, 65535, size=(5, 6, 3)).astype(np.uint16)
    png.from_array(raw.reshape(5, -1), "RGB;16").save(str(tmp_path / "deep.png"))
    signal = load_signal(str(tmp_path / "deep.png"))
    np.testing.assert_array_equal(signal.info.normalization.decode(signal.values), raw)


def test_write_image_16_bit_and_gray(tmp_path):
    raw = np.arange(12, dtype=np.uint16).reshape(3, 4, 1) * 5000
    write_image(tmp_path / "g.png", raw)
    np.testing.assert_array_equal(iio.imread(tmp_path / "g.png"), raw[..., 0])
