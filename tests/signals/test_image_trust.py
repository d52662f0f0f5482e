"""Images a reliability probe broke: non-finite pixels, constant images, decompression bombs, and huge images
shrunk by --max-size."""

import dataclasses
import json

import numpy as np
import pytest
import tifffile

from fieldlab import _validate
from fieldlab._errors import UserError
from fieldlab.signals import Normalization, image_signal, load_signal, write_image
from fieldlab.signals import image as image_module


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fieldlab: error:"), stderr
    return lines[0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_tiff_with_a_nan_or_inf_pixel_is_refused_with_its_location(tmp_path, cli, bad):
    image = np.random.rand(12, 16).astype(np.float32)
    image[3, 5] = bad
    tifffile.imwrite(tmp_path / "img.tif", image)
    status, _, stderr = cli(["fit", tmp_path / "img.tif", "--out", tmp_path / "out", "--steps", "2", "--quiet"])
    assert status == 2
    assert "row 3, column 5, channel 0" in one_error_line(stderr)
    assert not (tmp_path / "out").exists()


def test_constant_float_image_normalises_to_the_centre_and_decodes_exactly():
    for value, dtype in ((0.5, np.float32), (0.1, np.float64), (-3.3, np.float32), (0.0, np.float64)):
        raw = np.full((4, 4, 1), value, dtype)
        normalization = Normalization.for_array(raw)
        encoded = normalization.encode(raw)
        assert float(encoded.abs().max()) == 0.0  # the centre of [-1, 1]
        assert np.array_equal(normalization.decode(encoded), raw)


def test_constant_float_image_fits_at_a_high_psnr_and_renders_its_value(tmp_path, cli, one_thread):
    tifffile.imwrite(tmp_path / "grey.tif", np.full((16, 16), 0.5, np.float32))
    status, _, stderr = cli(["fit", tmp_path / "grey.tif", "--out", tmp_path / "fit", "--steps", "50",
                             "--device", "cpu", "--quiet"])
    assert status == 0, stderr
    assert json.loads((tmp_path / "fit" / "metrics.json").read_text())["psnr"] > 40  # 10.4 dB when mapped to -1
    status, _, stderr = cli(["render", tmp_path / "fit", "--out", tmp_path / "grey_out.tif", "--device", "cpu"])
    assert status == 0, stderr
    rendered = tifffile.imread(tmp_path / "grey_out.tif")
    assert rendered.dtype == np.float32 and np.allclose(rendered, 0.5, atol=1e-2)


@pytest.fixture
def few_pixels(monkeypatch):
    """LIMITS.pixels at 100, and decoders that fail the test if they are reached."""
    monkeypatch.setattr(_validate, "LIMITS", dataclasses.replace(_validate.LIMITS, pixels=100))

    def decoded(*args, **kwargs):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(image_module, "_read_png_exact", decoded)
    monkeypatch.setattr(image_module, "_imread", decoded)
    monkeypatch.setattr(image_module, "_read_shrunk", decoded)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])  # pypng's path and Pillow's
def test_png_over_the_pixel_limit_is_refused_before_decoding(tmp_path, cli, few_pixels, dtype):
    write_image(tmp_path / "bomb.png", np.zeros((20, 30, 3), dtype))
    status, _, stderr = cli(["fit", tmp_path / "bomb.png", "--out", tmp_path / "out", "--steps", "2", "--quiet"])
    assert status == 2
    assert "30x20 image (600 pixels; at most 100)" in one_error_line(stderr)
    assert not (tmp_path / "out").exists()


def test_image_whose_decoding_would_not_fit_in_memory_is_refused_before_decoding(tmp_path, cli, few_pixels,
                                                                                   monkeypatch):
    monkeypatch.setattr(_validate, "LIMITS", dataclasses.replace(_validate.LIMITS, pixels=10**6))
    monkeypatch.setattr(_validate, "available_memory", lambda: 1000)
    monkeypatch.setattr(_validate, "SMALL_BYTES", 0)  # a test image is small: check it as a large one
    write_image(tmp_path / "big.png", np.zeros((20, 30, 3), np.uint16))
    status, _, stderr = cli(["fit", tmp_path / "big.png", "--out", tmp_path / "out", "--steps", "2", "--quiet"])
    assert status == 2
    assert "of memory; this machine has" in one_error_line(stderr)


def smooth_image(height: int, width: int, peak: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    rgb = np.stack([x, y, 0.5 + 0.4 * np.sin(2 * np.pi * (x + 2 * y))], axis=-1)
    return np.rint(rgb * peak).astype(np.uint8 if peak == 255 else np.uint16)


@pytest.mark.parametrize(("size", "peak", "max_size"), [((1500, 2000), 255, 64), ((300, 400), 65535, 32)])
def test_max_size_far_below_the_image_shrinks_while_decoding_and_agrees_with_the_full_resize(
        tmp_path, monkeypatch, size, peak, max_size):
    raw = smooth_image(*size, peak)
    write_image(tmp_path / "big.png", raw)
    taken = []
    block_mean = image_module.block_mean
    monkeypatch.setattr(image_module, "block_mean", lambda rows, k: taken.append(k) or block_mean(rows, k))
    fast = load_signal(tmp_path / "big.png", max_size=max_size)
    assert taken and taken[0] >= 2  # the block path ran
    slow = image_signal(raw, source="full", max_size=max_size)  # the whole image, resized at once
    assert fast.shape == slow.shape and fast.info.normalization == slow.info.normalization
    assert float((fast.values - slow.values).abs().mean()) < 0.01  # field units: a range of 2


def test_block_mean_averages_partial_blocks_at_the_edges():
    image = np.arange(5 * 7 * 1, dtype=np.uint8).reshape(5, 7, 1)
    means = image_module.block_mean(iter(image), 3)
    assert means.shape == (2, 3, 1)
    assert means[1, 2, 0] == image[3:, 6:].mean() and means[0, 0, 0] == image[:3, :3].mean()


def test_undecodable_image_files_say_what_they_are_not_how_a_decoder_failed(tmp_path, cli):
    from fieldlab.signals.image import read_image

    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "empty.png").write_bytes(b"")
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(UserError, match="the file is empty \\(0 bytes\\)"):
        read_image(tmp_path / "set" / "empty.png")
    with pytest.raises(UserError, match=r"noise.png as an image \(not an image file that Pillow or imageio"):
        read_image(tmp_path / "noise.png")
    status, _, stderr = cli(["fit-dataset", tmp_path / "set", "--out", tmp_path / "S"])
    assert status == 2 and "empty.png" in one_error_line(stderr) and not (tmp_path / "S").exists()
