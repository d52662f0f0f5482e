"""Which samples a step trains on: the mini-batch draws of every training path, and their seeding.

Two kinds of draw, chosen by what a result must not depend on:

- `with_replacement` / `step_points`: k of n indices from a `torch.Generator` (`generator(seed)`, advanced
  by every draw): `fit`, `extend`, mesh fitting and MINER's positions draw the points of a step this way,
  meta-learning and `train`/`train-sdf` the rows of a batch (the learn loops from `step_generator`, seeded
  by the step, so a resumed run draws what the uninterrupted one would).
- `distinct_subset`: k distinct indices per field from a counter-based hash of (seed, row, step, sample),
  so a field's subsets do not depend on which other fields share its batch (`fit-dataset`).

Shapes: f fields, n samples, k samples per step.
"""

from __future__ import annotations

import torch


def generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A generator on `device` (default the CPU) seeded with `seed`."""
    return torch.Generator(device=device).manual_seed(seed)


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator for the draws of `step` alone (the learn loops'): the same at any resume point."""
    return generator(seed * 1_000_003 + step)


def with_replacement(n: int, k: int, generator: torch.Generator,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """(k,) indices into n, drawn uniformly with replacement from `generator`."""
    return torch.randint(n, (k,), device=device, generator=generator)


def step_points(n: int, k: int, generator: torch.Generator, device: torch.device | str | None = None):
    """The points (k,) of a step drawn with replacement, or None for all n when `k` is 0 or covers n (no draw,
    so the generator does not advance)."""
    return with_replacement(n, k, generator, device) if 0 < k < n else None


def subset_size(fraction: float, n: int) -> int:
    """How many of `n` samples a `fit-dataset` step takes: `fraction` of them (all for 0), at least one.
    (A single fit's `points_per_step` takes all where a fraction rounds to none.)"""
    k = round(fraction * n) if fraction else n
    return max(1, min(k, n))


def distinct_subset(rows: torch.Tensor, step: int, n: int, k: int, seed: int) -> torch.Tensor:
    """(f, k) distinct indices into n samples per field of `rows` (f,), from a hash of (seed, row, step, sample).

    A counter-based draw: the subset of a field does not depend on which other fields share its batch.
    """
    mask = 0xFFFFFFFF
    x = torch.arange(n, device=rows.device).mul_(0x85EBCA77)[None].add(
        rows[:, None] * 0x9E3779B1 + ((step * 0xC2B2AE3D + seed * 0x27D4EB2F) & mask)).bitwise_and_(mask)
    # an avalanching integer mix, in place: a third of the time of new (f, n) tensors per operation (16 fields of
    # 262,144 samples: 0.085 s against 0.23-0.27 s a step on 2 CPU cores), the same values
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x.bitwise_xor_(x >> shift).mul_(multiplier).bitwise_and_(mask)
    x.bitwise_xor_(x >> 16)
    return x.topk(k, dim=1, largest=False).indices
