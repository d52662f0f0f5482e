"""One large field fitted by the fused Triton kernel (`kernels.fused`): the single-signal side of it.

`Fitter` steps a field through here when `fit` chose the kernel (`fit.config.single_kernel`). The module's
parameters are packed once into a 1-field `FusedStack`, which keeps them and Adam's moments; a step is
the kernel's split mode (the field's points shared among many programs that add their partial gradients,
then Adam as a separate pass). The module is a copy, written back only when it is read.

A partitioned field (`FusedSpec.partitioned`: Local-Global's local mode) is a stack of p kernel fields, one
per partition, and its module says so: `fused_params()` (the stacked layers under the kernel's names),
`load_fused(named)` (their inverse) and `fused_routes(coords)` (the coordinates the MLPs read and each point's
partition). A step groups its points by partition, each row of the index padded to the largest group with
the group's size beside it (`FusedStack.step`'s counts), and every partition's error is summed over the k
points of the step: the gradients of the reference path's mean over the batch, so the same draws make the
same fit. With mini-batches the grouping reads the largest group's size on the host once per step.

Shapes: n points, d coordinate dims, c channels, k points per step, p partitions.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from fieldlab.kernels.fused import FusedSpec, FusedStack

_HYPER_ROWS = 1024
"""Adam's per-step scalars are sent to the device this many steps at a time (not once per step)."""


class FusedSingle:
    """The parameters and Adam moments of one field, stepped by the fused kernel at its training points
    `coords` (n, d) (partition-tagged ones for a partitioned field) with targets `values` (n, c);
    `lr_at(step)` is the learning rate of 0-based step `step` (warm-up and decay included)."""

    def __init__(self, field: nn.Module, spec: FusedSpec, coords: torch.Tensor, values: torch.Tensor, *,
                 precision: str, betas: tuple[float, float], eps: float, lr_at: Callable[[int], float]):
        self.partitioned = spec.partitioned
        if self.partitioned:  # a stack of one MLP per partition
            params, buffers = field.fused_params(), {}
            coords, self.slots = field.fused_routes(coords)
        else:  # a stack of one: (1, ...)
            params = {name: p.detach()[None] for name, p in field.named_parameters()}
            buffers = {name: b[None] for name, b in field.named_buffers()}  # a Fourier field's encoding
            self.slots = None
        self.stack = FusedStack(spec, params, buffers=buffers, precision=precision, betas=betas, eps=eps)
        self.coords = coords.contiguous()
        self.values = values[None]  # (1, n, c): the kernel reads a field's targets through a row map
        self.rows = torch.zeros(len(self.stack), dtype=torch.int32, device=values.device)
        self._every = None if self.slots is None else self._grouped(torch.arange(len(self.slots),
                                                                                   device=self.slots.device))
        self.lr_at = lr_at
        self._hyper, self._hyper_from = None, 0
        self.stale = False
        """Whether the module lags behind the stack (steps since the last `write_back`)."""

    def step(self, index: torch.Tensor | None) -> torch.Tensor:
        """One Adam step on the training points `index` (k,), all when None; returns the mean squared error
        before the step (not synchronised)."""
        done = self.stack.step_count
        if self._hyper is None or done >= self._hyper_from + len(self._hyper):
            self._hyper_from = done
            self._hyper = self.stack.hyper([self.lr_at(s) for s in range(done, done + _HYPER_ROWS)], done + 1)
        hyper = self._hyper[done - self._hyper_from]
        k = self.values.shape[1] if index is None else index.shape[0]
        if self.slots is None:
            total = self.stack.step(self.coords, self.values, self.rows, hyper,
                                    index=None if index is None else index[None])
        else:
            grouped, counts = self._every if index is None else self._grouped(index)
            total = self.stack.step(self.coords, self.values, self.rows, hyper, index=grouped, counts=counts,
                                    mean_over=k)
        self.stale = True
        return total.sum() / (k * self.values.shape[2])

    def _grouped(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Points (k,) as rows of partitions: (p, widest group) int32, padded with 0, and each row's count (p,)."""
        slot = self.slots[points]
        order = torch.argsort(slot, stable=True)
        counts = torch.bincount(slot, minlength=len(self.stack))
        ordered = slot[order]
        column = torch.arange(len(points), device=points.device) - (torch.cumsum(counts, 0) - counts)[ordered]
        grouped = torch.zeros(len(self.stack), max(1, int(counts.max())), dtype=torch.int32, device=points.device)
        grouped[ordered, column] = points[order].to(torch.int32)
        return grouped, counts.to(torch.int32)

    @torch.no_grad()
    def write_back(self, field: nn.Module) -> None:
        """Copy the stack's parameters into `field` (the module it was packed from)."""
        if not self.stale:
            return
        if self.partitioned:
            field.load_fused(self.stack.params())
        else:
            named = dict(field.named_parameters())
            for name, value in self.stack.params().items():
                named[name].copy_(value[0])
        self.stale = False
