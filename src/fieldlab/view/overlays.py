"""Overlays of a partitioned image field: Local-Global's partitions, and MINER's blocks per scale (which have
a network, which were pruned), each with the field's error in it.

A block's error is measured on at most `POINTS` of its samples drawn at random (seeded), never on the
whole signal, so that the overlay of a large field costs about as much as a few tiles."""

from __future__ import annotations

import math

import numpy as np
import torch

POINTS = 1024
"""Samples per block at most that its error is measured on."""
BUDGET = 2**21
"""Samples over all the blocks of one overlay at most."""


def overlay_names(stored) -> list[str]:
    """The overlays that `stored` has: "partitions" for Local-Global, "scale S" per scale for MINER."""
    from fieldlab.fields.local_global import LocalGlobal
    from fieldlab.fields.miner import Miner

    if stored.signal.kind != "image":
        return []
    if isinstance(stored.module, LocalGlobal):
        return ["partitions"]
    if isinstance(stored.module, Miner):
        return [f"scale {s}" for s in range(stored.module.num_scales)]
    return []


def _boxes(stored, name: str) -> tuple[list[tuple[tuple[int, int], ...]], list[bool]]:
    """(boxes in sample units, whether each has a network) of overlay `name`."""
    from fieldlab._errors import UserError

    if name not in overlay_names(stored):
        raise UserError(f"this field has no overlay {name!r}; it has {', '.join(overlay_names(stored)) or 'none'}")
    if name == "partitions":
        boxes = [b for b in stored.config.part_boxes() if b]
        return boxes, [True] * len(boxes)
    miner, scale = stored.module, int(name.split()[1])
    extent, counts = miner.extent(scale), miner.blocks_per_axis(scale)
    slots = miner.levels[scale].slots().cpu().numpy()
    boxes, active = [], []
    for flat, index in enumerate(np.ndindex(*counts)):  # row-major, as MINER numbers its blocks
        boxes.append(tuple((i * extent, min((i + 1) * extent, n)) for i, n in zip(index, stored.signal.shape)))
        active.append(bool(slots[flat] >= 0))
    return boxes, active


@torch.no_grad()
def overlay(stored, original: np.ndarray | None, name: str, device: str = "cpu", seed: int = 0) -> dict:
    """{"boxes": [[r0, r1, c0, c1], ...], "active": [...], "psnr": [dB or None, ...]} of overlay `name`;
    the PSNR is None for an empty box or when the original cannot be read."""
    boxes, active = _boxes(stored, name)
    shape = stored.signal.shape
    clipped = [tuple((max(0, lo), min(hi, n)) for (lo, hi), n in zip(box, shape)) for box in boxes]
    # MINER's blocks cover its grid padded to whole blocks: those wholly past the signal are not drawn
    kept = [k for k, box in enumerate(clipped) if all(lo < hi for lo, hi in box)]
    boxes, active = [clipped[k] for k in kept], [active[k] for k in kept]
    psnr: list[float | None] = [None] * len(boxes)
    if original is not None:
        per_box = max(16, min(POINTS, BUDGET // max(1, len(boxes))))
        rng = np.random.default_rng(seed)
        picks = [_pick(box, per_box, rng) for box in boxes]
        points = np.concatenate([p for p in picks if len(p)]) if any(len(p) for p in picks) else np.zeros((0, 2), int)
        field = _values_at(stored, points, device)
        scale = stored.signal.normalization.scale or 1.0
        start = 0
        for k, p in enumerate(picks):
            if not len(p):
                continue
            error = (field[start:start + len(p)] - original[p[:, 0], p[:, 1]].astype(np.float64)) / scale
            start += len(p)
            mse = float(np.mean(error ** 2))
            psnr[k] = round(-10 * math.log10(mse), 2) if mse > 0 else 99.0
    return {"boxes": [[b[0][0], b[0][1], b[1][0], b[1][1]] for b in boxes], "active": active, "psnr": psnr}


def _pick(box, count: int, rng) -> np.ndarray:
    """Up to `count` distinct sample positions (row, column) of `box`, all of them when it holds fewer."""
    (r0, r1), (c0, c1) = box
    total = max(0, r1 - r0) * max(0, c1 - c0)
    if total == 0:
        return np.zeros((0, 2), dtype=np.int64)
    flat = np.arange(total) if total <= count else rng.choice(total, size=count, replace=False)
    return np.stack([r0 + flat // (c1 - c0), c0 + flat % (c1 - c0)], -1)


def _values_at(stored, points: np.ndarray, device: str) -> np.ndarray:
    """Raw field values (n, c) at the centres of sample positions `points` (n, 2), as render decodes them."""
    if not len(points):
        return np.zeros((0, stored.signal.channels))
    domain = torch.tensor(stored.signal.domain, dtype=torch.float64)
    centres = torch.from_numpy(points).double() + 0.5
    coords = (2 * (centres - domain[:, 0]) / (domain[:, 1] - domain[:, 0]) - 1).float()
    module = stored.module.to(device)
    values = torch.cat([module(coords[i:i + 2**18].to(device)).float().cpu() for i in range(0, len(coords), 2**18)])
    return stored.signal.normalization.decode(values).astype(np.float64)
