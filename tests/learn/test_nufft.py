"""The NUFFT CNN's spectral resampling: radians, density compensation, exactness on grids."""

import math

import pytest
import torch

from fieldlab.learn import points as P
from fieldlab.learn.nufft import frequencies, spectral_image, spectrum


def _image_and_samples(side=8, channels=2, seed=0):
    torch.manual_seed(seed)
    pts = P.grid((side, side))
    image = torch.randn(3, channels, side, side)
    rows, cols = pts.raster // side, pts.raster % side
    return pts, image, image[:, :, rows, cols].transpose(1, 2)  # samples (3, n, c) in the set's own order


def _fft_spectrum(image):
    """∫ f e^{-iπ k·x} dx of a cell-centre grid image by torch.fft: the DFT, shifted to k = -K/2 … K/2 - 1,
    times the cell area and the half-cell phase e^{-iπ k (1/K - 1)} per axis."""
    k_side = image.shape[-1]
    k = frequencies(k_side)
    shift = torch.exp(-1j * math.pi * k * (1 / k_side - 1))
    F = torch.fft.fftshift(torch.fft.fft2(image.double()), dim=(-2, -1)) * (4 / k_side ** 2)
    return F * shift[:, None] * shift[None, :]


@pytest.mark.parametrize("backend", ["exact", "kbnufft"])
def test_nufft_of_grid_samples_is_the_grid_fft(backend):
    pts, image, samples = _image_and_samples()
    F = spectrum(samples, pts, 8, backend)
    expected = _fft_spectrum(image)
    tol = 1e-5 if backend == "exact" else 2e-3 * expected.abs().max()  # Kaiser–Bessel interpolation error
    assert (F.to(expected.dtype) - expected).abs().max() < tol
    back = spectral_image(samples, pts, 8, backend)
    assert torch.allclose(back, image, atol=1e-5 if backend == "exact" else 5e-3)


def test_density_compensation_makes_the_image_independent_of_where_points_crowd():
    """A smooth band-limited field read from a shrunk set (points crowd the centre, weights corrected) gives
    nearly the image a uniform set gives; without the weights the shrunk image is scaled where points crowd."""
    def field(coords):  # low frequencies only: well inside the 8×8 band
        return (torch.cos(math.pi * coords[:, 0]) + 0.5 * torch.sin(math.pi * coords[:, 1]))[None, :, None]

    reference = spectral_image(field(P.grid((8, 8)).coords), P.grid((8, 8)), 8, "exact")
    shrunk = P.shrunk(4096, 2, seed=1)
    compensated = spectral_image(field(shrunk.coords), shrunk, 8, "exact")
    uniform_weights = P.PointSet(shrunk.coords, torch.full((4096,), 4 / 4096))
    naive = spectral_image(field(shrunk.coords), uniform_weights, 8, "exact")
    error = (compensated - reference).abs().mean() / reference.abs().mean()
    naive_error = (naive - reference).abs().mean() / reference.abs().mean()
    assert error < 0.1 and naive_error > 3 * error, (error, naive_error)


def test_nuft_nets_read_any_point_set():
    from fieldlab.learn.layers import Discretized
    from fieldlab.learn.nets import net_config

    for name, shape in (("nuft", (2, 4)), ("nuft_seg", (2, 100, 4))):
        net = net_config(name, backend="exact", channels=4).for_points(64, 2).build(1, 4)
        out = net(Discretized(torch.randn(2, 100, 1), P.qmc(100, 2, scramble=True)))
        out = out.values if isinstance(out, Discretized) else out
        assert out.shape == shape and torch.isfinite(out).all()


def test_train_nuft_classifier_on_blobs(cli, blob_store, tmp_path):
    run = tmp_path / "run"
    status, out, err = cli(["train", blob_store, "--net", "nuft", "--backend", "exact", "--channels", 8, "--out", run,
                            "--num-points", 64, "--steps", 60, "--batch-size", 32, "--lr", 3e-3])
    assert status == 0, err
    accuracy = float(out.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 50, out  # 3 balanced classes: chance is 33%
    status, out, err = cli(["eval", run, blob_store, "--points", "grid,qmc,shrunk", "--resolutions", 8])
    assert status == 0 and "n/a" not in out, out + err  # a NUFFT net reads every point set
    status, out, err = cli(["train", blob_store, "--net", "nuft", "--backend", "fft", "--out", tmp_path / "r2"])
    assert status == 2 and "must be one of" in err, err


def test_missing_nufft_extra_stops_train_before_anything_is_written(cli, blob_store, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchkbnufft", None)  # as if the 'nufft' extra were not installed
    status, out, err = cli(["train", blob_store, "--net", "nuft", "--out", tmp_path / "r", "--steps", 2])
    assert status == 2 and "fieldlab[nufft]" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()
