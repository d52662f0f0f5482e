"""The seam metric of partitioned and block fields: the error along the borders between parts against the
error inside them, in dB.

A field cut into parts (Local-Global partitions, MINER blocks) may be continuous inside each part and jump
where two meet; a seam shows as a border error well above the interior's. `seam_psnrs` scores the samples
within one of a border (the two sample rows that touch it) apart from the rest.
"""

from __future__ import annotations

import torch

from fieldlab.fit.metrics import psnr_from_mse


def border_mask(shape: tuple[int, ...], edges: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """Bool (*shape): samples that touch an inner edge of `edges` (per axis, in samples; sample i spans
    [i, i + 1), so edge e touches samples e - 1 and e). Edges at or past the grid's ends are no border."""
    mask = torch.zeros(shape, dtype=torch.bool)
    for axis, (n, cuts) in enumerate(zip(shape, edges)):
        touches = torch.zeros(n, dtype=torch.bool)
        for e in cuts:
            if 0 < e < n:
                touches[e - 1:e + 1] = True
        view = [1] * len(shape)
        view[axis] = n
        mask = mask | touches.view(view)
    return mask


def seam_psnrs(prediction: torch.Tensor, target: torch.Tensor, edges: tuple[tuple[int, ...], ...]
               ) -> dict[str, float]:
    """PSNR (field range [-1, 1], prediction clamped to it) of the border samples and of the interior ones,
    and `seam_db`, interior minus border: about 0 for a field without seams. prediction, target (*shape, c)."""
    mask = border_mask(tuple(target.shape[:-1]), edges)
    error = (prediction.clamp(-1, 1) - target).square().mean(-1)  # (*shape,)
    if not mask.any() or mask.all():
        raise ValueError("the edges leave no border or no interior on this grid")
    border, interior = psnr_from_mse(float(error[mask].mean())), psnr_from_mse(float(error[~mask].mean()))
    return {"border_psnr": border, "interior_psnr": interior, "seam_db": interior - border}


def inner_edges(shape: tuple[int, ...], step: int) -> tuple[tuple[int, ...], ...]:
    """Edges every `step` samples along each axis of `shape` (a block grid's, e.g. MINER's finest scale)."""
    return tuple(tuple(range(step, n, step)) for n in shape)
