"""Reconstruction metrics. Values are in the field range [-1, 1]: PSNR's peak is its span, `PEAK` = 2.

`psnr_from_mse` is the one PSNR of a mean squared error (a float), `field_psnrs` the same per field of a
stack, on the device; every path measures with one of the two.
"""

from __future__ import annotations

import math

import numpy as np
import torch


PEAK = 2.0
"""Peak-to-peak of the field range [-1, 1], the peak of every PSNR here (so PSNR equals PSNR on [0, 1])."""
_PEAK_SQUARED = PEAK**2


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error measured in the field range [-1, 1]; equal to PSNR on [0, 1]."""
    return math.inf if mse <= 0 else 10 * math.log10(_PEAK_SQUARED / mse)


def field_psnrs(mse: torch.Tensor) -> torch.Tensor:
    """`psnr_from_mse` of each field's error (f,), in float64 on the device (no synchronisation per field).

    An exact fit reads about 306 dB rather than inf: stores take a non-finite PSNR for a diverged fit.
    """
    return 10 * torch.log10(_PEAK_SQUARED / mse.double().clamp_min(1e-30))


def field_snrs(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per field of a stack (f, n, c), the signal-to-noise ratio 10·log10(Σ target² / Σ error²) in dB, float64 on
    the device: the quality of a sound, which PSNR (against the full range) misreads for a quiet one. A silent
    field's is −inf until its error is 0 (then NaN): it never reaches a target."""
    signal = target.double().square().sum(dim=(1, 2))
    noise = (prediction.double() - target.double()).square().sum(dim=(1, 2))
    return 10 * torch.log10(signal / noise)


def field_sign_accuracies(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per field of a stack (f, n, c), the share of samples whose sign is right (prediction ≥ 0 ⇔ target ≥ 0),
    in float64 on the device: the quality of an occupancy field (±1, inside ⇔ value ≥ 0), which its PSNR
    misreads (a field that is right everywhere but soft at the surface scores 20-25 dB)."""
    return ((prediction >= 0) == (target >= 0)).double().mean(dim=(1, 2))


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    return psnr_from_mse(float(torch.mean((prediction.double() - target.double()) ** 2)))


_SSIM_SIGMA, _SSIM_RADIUS = 1.5, 5
"""SSIM's Gaussian window (Wang et al. 2004): σ = 1.5 samples, cut at 3.5 σ, so 11 samples wide."""


def _local_means(maps: torch.Tensor) -> torch.Tensor:
    """`maps` (m, H, W, C) filtered along H and W by the normalised 11-sample Gaussian, only where the
    window fits: (m, H − 10, W − 10, C)."""
    offsets = torch.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / _SSIM_SIGMA) ** 2)
    weights = (weights / weights.sum()).tolist()
    for dim in (1, 2):
        length = maps.shape[dim] - 2 * _SSIM_RADIUS
        out = maps.narrow(dim, 0, length) * weights[0]
        for k in range(1, len(weights)):  # in place: no temporary image per tap
            out.add_(maps.narrow(dim, k, length), alpha=weights[k])
        maps = out
    return maps


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Structural similarity of two images (H, W, C) in [-1, 1], measured on [0, 1] in float64.

    The Gaussian-window SSIM of Wang et al. 2004 (scikit-image's `structural_similarity` with
    `gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1`: K1 = 0.01, K2 = 0.03),
    the mean over channels and over the pixels whose window lies inside the image, which is where
    scikit-image averages too, so no border rule is needed. NaN when the window does not fit.
    """
    if min(prediction.shape[:2]) < 2 * _SSIM_RADIUS + 1:
        return float("nan")
    x = ((prediction.detach().double() + 1) / 2).clip(0, 1)
    y = ((target.detach().double() + 1) / 2).clip(0, 1)
    mx, my, mxx, myy, mxy = _local_means(torch.stack([x, y, x * x, y * y, x * y]))
    vx, vy, vxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def snr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Signal-to-noise ratio in dB: signal power over error power (audio's usual measure); NaN for a silent
    target, which has no signal to measure against (not reported, as an SSIM of a too-small image)."""
    error = float(torch.mean((prediction.double() - target.double()) ** 2))
    power = float(torch.mean(target.double() ** 2))
    if power <= 0:
        return math.nan
    return math.inf if error <= 0 else 10 * math.log10(power / error)


def frame_psnrs(prediction: torch.Tensor, target: torch.Tensor) -> list[float]:
    """PSNR of each frame of a video (T, H, W, C)."""
    error = ((prediction.double() - target.double()) ** 2).mean(dim=(1, 2, 3))
    return [psnr_from_mse(float(e)) for e in error]


def _frame_psnr(prediction: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    frames = frame_psnrs(prediction, target)
    return {"psnr_frame_mean": float(np.mean(frames)), "psnr_frame_min": float(np.min(frames))}


MEASURES = {
    "psnr": lambda p, t: {"psnr": psnr(p, t)}, "ssim": lambda p, t: {"ssim": ssim(p, t)},
    "snr": lambda p, t: {"snr": snr(p, t)}, "frame_psnr": _frame_psnr,
}
"""The measures a modality names in `Modality.metrics`: (prediction, target) → the values it reports."""


SAMPLED = ("psnr", "snr")
"""The measures that a part of the samples estimates (means over samples); SSIM and per-frame PSNRs need the
whole signal."""


def metrics_for(kind: str, prediction: torch.Tensor, target: torch.Tensor, *,
                sampled: bool = False) -> dict[str, float]:
    """The metrics the modality `kind` reports (its `Modality.metrics`; prediction and target (*shape, c)); with
    `sampled`, those of them that a part of the samples gives (`SAMPLED`; prediction and target (samples, c))."""
    from fieldlab.signals import get_modality

    result = {}
    for name in get_modality(kind).metrics:
        if not sampled or name in SAMPLED:
            result.update(MEASURES[name](prediction, target))
    return {k: float(np.round(v, 4)) for k, v in result.items()}
