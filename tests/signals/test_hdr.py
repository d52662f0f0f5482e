"""EXR and Radiance HDR images: fitted on their linear float values and written back as float."""

import json
import shutil
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from fieldlab._errors import UserError
from fieldlab.signals import load_signal
from fieldlab.signals.hdr import hdr_format, read_hdr_image, tone_map, write_hdr_image


def gradient(height: int = 24, width: int = 32) -> np.ndarray:
    """Linear RGB up to 20.0 with a negative corner, as a rendered EXR may hold."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height - 1, width - 1])[:, None, None]
    return np.stack([20 * x, 20 * y, 5 * (x + y) - 1], axis=-1).astype(np.float32)


def fit_and_render(tmp_path, cli, name: str):
    source = tmp_path / name
    write_hdr_image(source, gradient())
    status, _, stderr = cli(["fit", source, "--out", tmp_path / "fit", "--steps", "30", "--device", "cpu",
                             "--quiet"])
    assert status == 0, stderr
    suffix = source.suffix
    status, _, stderr = cli(["render", tmp_path / "fit", "--out", tmp_path / f"out{suffix}", "--device", "cpu"])
    assert status == 0, stderr
    return source, tmp_path / "fit", tmp_path / f"out{suffix}"


def test_exr_fits_and_renders_back_to_float_exr(tmp_path, cli, one_thread):
    source, folder, out = fit_and_render(tmp_path, cli, "gradient.exr")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["psnr_peak"] == pytest.approx(21.0)  # max - min of the linear values
    reconstruction = read_hdr_image(folder / "reconstruction.exr", "exr")
    rendered = read_hdr_image(out, "exr")
    assert rendered.dtype == np.float32 and rendered.shape == (24, 32, 3)
    np.testing.assert_allclose(rendered, reconstruction, atol=1e-4)  # the same field on the same grid
    assert len(np.unique(rendered)) > 256  # not quantised
    assert load_signal(source).info.normalization.offset == pytest.approx(-1.0)  # negatives kept, not clipped
    preview = iio.imread(folder / "reconstruction.png")
    assert preview.dtype == np.uint8 and preview.shape == (24, 32, 3)


def test_radiance_hdr_fits_and_renders_back_to_float_hdr(tmp_path, cli, one_thread):
    _, folder, out = fit_and_render(tmp_path, cli, "gradient.hdr")
    assert (folder / "reconstruction.hdr").is_file() and (folder / "reconstruction.png").is_file()
    rendered = read_hdr_image(out, "hdr")
    reconstruction = read_hdr_image(folder / "reconstruction.hdr", "hdr")
    assert rendered.dtype == np.float32 and rendered.max() > 10
    np.testing.assert_allclose(rendered, reconstruction, rtol=0.02, atol=0.05)  # RGBE keeps 8-bit mantissas


def test_float_exr_forced_as_an_image_under_another_name_is_not_quantised(tmp_path, cli, one_thread):
    write_hdr_image(tmp_path / "albert.exr", gradient(8, 8))
    shutil.copy(tmp_path / "albert.exr", tmp_path / "albert.bin")
    status, _, stderr = cli(["fit", tmp_path / "albert.bin", "--modality", "image", "--out", tmp_path / "fit",
                             "--steps", "5", "--device", "cpu", "--quiet"])
    assert status == 0, stderr
    assert read_hdr_image(tmp_path / "fit" / "reconstruction.exr", "exr").dtype == np.float32


def test_exr_with_a_non_finite_pixel_is_refused_with_its_location(tmp_path, cli):
    image = gradient(6, 7)
    image[2, 4, 1] = np.inf
    write_hdr_image(tmp_path / "bad.exr", image)
    status, _, stderr = cli(["fit", tmp_path / "bad.exr", "--out", tmp_path / "out", "--steps", "2", "--quiet"])
    assert status == 2 and "row 2, column 4, channel 1" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_gray_exr_is_read_as_one_channel(tmp_path):
    gray = gradient(5, 6)[..., :1]
    write_hdr_image(tmp_path / "gray.exr", gray)
    signal = load_signal(tmp_path / "gray.exr")
    assert signal.info.channels == 1 and signal.info.extra["format"] == "exr"
    assert hdr_format(tmp_path / "gray.exr") == "exr"


def test_tone_map_is_monotone_srgb_of_reinhard_and_keeps_alpha_in_range():
    values = np.array([[[-1.0, 0.0, 1.0, 2.0], [1e6, 0.5, 0.25, 0.5]]])  # RGBA
    mapped = tone_map(values)
    assert mapped.dtype == np.uint8
    assert mapped[0, 0, 0] == 0 and mapped[0, 0, 1] == 0 and mapped[0, 0, 3] == 255  # negative -> 0; alpha clipped
    assert mapped[0, 1, 0] == 255 and mapped[0, 0, 2] == 188  # Reinhard 1 -> 0.5, sRGB 0.5 -> 0.735


def test_missing_hdr_extra_names_it(tmp_path, monkeypatch):
    write_hdr_image(tmp_path / "g.exr", gradient(4, 4))
    monkeypatch.setitem(sys.modules, "OpenEXR", None)
    with pytest.raises(UserError, match=r"pip install 'fieldlab\[hdr\]'"):
        load_signal(tmp_path / "g.exr")
