"""One large field fitted by the fused Triton kernel (`fields._fused_mlp`): the single-signal side of it.

`Fitter` steps a field through here when `fit` chose the kernel (`single_kernel`). The module's
parameters are packed once into a 1-field `FusedStack`, which keeps them and Adam's moments; a step is
the kernel's split mode (the field's points shared among many programs that add their partial gradients,
then Adam as a separate pass). The module is a copy, written back only when it is read.

Shapes: n points, d coordinate dims, c channels, k points per step.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from fieldlab._errors import UserError
from fieldlab.fields import FieldConfig
from fieldlab.fit.config import FitConfig

AUTO_MIN_POINTS = 16_384
"""`--kernel auto` fits one field with the fused kernel only from this many points per step; fewer take
the reference path. Measured on an H100 (benchmarks/fit_single.py, SIREN 3×64 bf16, BENCHMARKS.md): the
kernel is 15.9× the reference at 16,384 points, 7.1× at 65,536, 10× at 262,144; smaller signals were
not measured, and fit in a fraction of a second either way."""
_HYPER_ROWS = 1024
"""Adam's per-step scalars are sent to the device this many steps at a time (not once per step)."""


def points_per_step(config: FitConfig, n: int) -> int:
    """How many of `n` points one step of a single fit uses (`batch_size`, `sample_fraction` or all)."""
    size = config.batch_size or round(config.sample_fraction * n)
    return n if not size or size >= n else size


def single_kernel(config: FieldConfig, fit_config: FitConfig, device: torch.device, points: int):
    """The fused kernel's `FusedSpec` to fit one field of `config` on `device` with `points` points per
    step, or None for the reference path. `fit_config.kernel`: auto takes the kernel on CUDA for the fields
    and widths it covers (see `choose_kernel`), from AUTO_MIN_POINTS points per step and without `compile`;
    fused forces it (a clear `UserError` where it cannot run); reference never takes it."""
    from fieldlab.fields._fused_mlp import choose_kernel

    spec = choose_kernel(config, device, fit_config.kernel, fit_config.precision)
    if spec is None:
        return None
    if fit_config.kernel == "fused":
        if fit_config.compile:
            raise UserError("--compile compiles the reference path; drop it or use --kernel reference")
        return spec
    return spec if not fit_config.compile and points >= AUTO_MIN_POINTS else None


class FusedSingle:
    """The parameters and Adam moments of one field, stepped by the fused kernel; `lr_at(step)` is the
    learning rate of 0-based step `step` (warm-up and decay included)."""

    def __init__(self, field: nn.Module, spec, values: torch.Tensor, *, precision: str,
                 betas: tuple[float, float], eps: float, lr_at: Callable[[int], float]):
        from fieldlab.fields._fused_mlp import FusedStack

        params = {name: p.detach()[None] for name, p in field.named_parameters()}  # a stack of one: (1, ...)
        buffers = {name: b[None] for name, b in field.named_buffers()}  # a Fourier field's encoding
        self.stack = FusedStack(spec, params, buffers=buffers, precision=precision, betas=betas, eps=eps)
        self.values = values[None]  # (1, n, c): the kernel reads a field's targets through a row map
        self.rows = torch.zeros(1, dtype=torch.int32, device=values.device)
        self.lr_at = lr_at
        self._hyper, self._hyper_from = None, 0
        self.stale = False
        """Whether the module lags behind the stack (steps since the last `write_back`)."""

    def step(self, coords: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """One Adam step on the points `index` (k,) of `coords` (n, d), all when None; returns the mean
        squared error before the step (not synchronised)."""
        done = self.stack.step_count
        if self._hyper is None or done >= self._hyper_from + len(self._hyper):
            self._hyper_from = done
            self._hyper = self.stack.hyper([self.lr_at(s) for s in range(done, done + _HYPER_ROWS)], done + 1)
        k = self.values.shape[1] if index is None else index.shape[0]
        total = self.stack.step(coords, self.values, self.rows, self._hyper[done - self._hyper_from],
                                index=None if index is None else index[None])
        self.stale = True
        return total[0] / (k * self.values.shape[2])

    @torch.no_grad()
    def write_back(self, field: nn.Module) -> None:
        """Copy the stack's parameters into `field` (the module it was packed from)."""
        if not self.stale:
            return
        named = dict(field.named_parameters())
        for name, value in self.stack.params().items():
            named[name].copy_(value[0])
        self.stale = False
