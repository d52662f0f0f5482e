"""One large field fitted by the fused Triton kernel (`kernels.fused`): the single-signal side of it.

`Fitter` steps a field through here when `fit` chose the kernel (`fit.config.single_kernel`). The module's
parameters are packed once into a 1-field `FusedStack`, which keeps them and Adam's moments; a step is
the kernel's split mode (the field's points shared among many programs that add their partial gradients,
then Adam as a separate pass). The module is a copy, written back only when it is read.

Shapes: n points, d coordinate dims, c channels, k points per step.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from fieldlab.kernels.fused import FusedSpec, FusedStack

_HYPER_ROWS = 1024
"""Adam's per-step scalars are sent to the device this many steps at a time (not once per step)."""


class FusedSingle:
    """The parameters and Adam moments of one field, stepped by the fused kernel; `lr_at(step)` is the
    learning rate of 0-based step `step` (warm-up and decay included)."""

    def __init__(self, field: nn.Module, spec: FusedSpec, values: torch.Tensor, *, precision: str,
                 betas: tuple[float, float], eps: float, lr_at: Callable[[int], float]):
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
