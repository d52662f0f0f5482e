"""SSIM against scikit-image's, which it replaces (scikit-image imports scipy: 0.1 to 0.6 s of a command)."""

from __future__ import annotations

import math

import pytest
import torch

from fieldlab.fit.metrics import ssim

skimage_metrics = pytest.importorskip("skimage.metrics")


def _pair(shape: tuple[int, ...], noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth image in [-1, 1] and a noisy copy (values outside [-1, 1] included, which both clip)."""
    generator = torch.Generator().manual_seed(seed)
    h, w = shape[:2]
    yy, xx = torch.meshgrid(torch.linspace(0, 3, h), torch.linspace(0, 5, w), indexing="ij")
    target = torch.stack([torch.sin(xx + c) * torch.cos(yy * (c + 1)) for c in range(shape[2])], dim=-1)
    return target + noise * torch.randn(target.shape, generator=generator), target


def _reference(prediction: torch.Tensor, target: torch.Tensor) -> float:
    a = ((prediction.double().numpy() + 1) / 2).clip(0, 1)
    b = ((target.double().numpy() + 1) / 2).clip(0, 1)
    return float(skimage_metrics.structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                                       sigma=1.5, use_sample_covariance=False))


@pytest.mark.parametrize("shape, noise", [((32, 40, 3), 0.1), ((11, 17, 1), 0.3), ((24, 24, 2), 0.02)])
def test_ssim_matches_scikit_image(shape, noise):
    prediction, target = _pair(shape, noise)
    ours = ssim(prediction, target)
    assert ours == pytest.approx(_reference(prediction, target), abs=1e-4)
    assert ours < 0.999  # the noise shows: not a comparison of two perfect scores


def test_ssim_of_an_image_with_itself_is_one_and_a_too_small_image_nan():
    _, target = _pair((16, 16, 3), 0.0)
    assert ssim(target, target) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(ssim(target[:10], target[:10]))


def test_snr_of_a_silent_target_is_not_a_number():
    """A silent clip has no signal power: its SNR was printed as -258 dB (1e-30 over the error); it is NaN now,
    which the summary line and metrics.json leave out, while a clip with any signal keeps its SNR."""
    from fieldlab.fit.metrics import snr

    silent = torch.zeros(100, 1)
    assert math.isnan(snr(silent + 0.01, silent))
    assert snr(silent + 0.11, silent + 0.1) == pytest.approx(20.0)  # power 0.01 over an error of 0.0001
    assert snr(silent + 0.1, silent + 0.1) == math.inf
