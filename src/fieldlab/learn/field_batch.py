"""FieldBatch: a batch of stored fields evaluated at a point set through the batched path.

Per-field tensors (a SIREN's whole parameter set, or a functa latent) arrive stacked (b, ...) and are
handed to one `FieldStack` as overrides, so b fields are evaluated by one vmapped call — no Python loop
over fields — with shared tensors (functa's network) held once. On CUDA, SIREN, Gaussian and Fourier-feature
MLP fields go through the fused forward kernel instead (`fields._fused_mlp`, `kernel="auto"`), which keeps the
activations in registers; `kernel="reference"` forces the vmapped path.
"""

from __future__ import annotations

import torch

from fieldlab.fields import FieldConfig, FieldStack
from fieldlab.learn.layers import Discretized
from fieldlab.learn.points import PointSet


class FieldEvaluator(torch.nn.Module):
    """Evaluates stacked per-field tensors of one architecture: `evaluator(params, points) -> Discretized`."""

    def __init__(self, config: FieldConfig, shared: dict[str, torch.Tensor] | None = None, kernel: str = "auto"):
        super().__init__()
        self.kernel = kernel
        template = config.build()
        self.config = config
        self._buffers_one = {k: v.detach() for k, v in template.named_buffers()}
        self._template = template
        self._shared = {k: v.detach() for k, v in (shared or {}).items()}

    @classmethod
    def from_store(cls, store) -> FieldEvaluator:
        return cls(store.config, store.shared())

    def stack(self, params: dict[str, torch.Tensor]) -> FieldStack:
        """The fields `params` (b, ...) as a `FieldStack` (no copy of the tensors)."""
        b = next(iter(params.values())).shape[0]
        device = next(iter(params.values())).device
        # A store keeps buffers per field (a Fourier field's random frequencies): those win over the template's.
        buffers = {k: params[k] if k in params else v.to(device).expand(b, *v.shape)
                   for k, v in self._buffers_one.items()}
        shared = {k: v.to(device) for k, v in self._shared.items()}
        return FieldStack(self._template, {k: v for k, v in params.items() if k not in buffers}, buffers, shared=shared)

    @torch.no_grad()
    def forward(self, params: dict[str, torch.Tensor], points: PointSet,
                coords: torch.Tensor | None = None) -> Discretized:
        """Values (b, n, c) of the fields at `points` (or at `coords` (n, d), e.g. jittered, labelled as `points`)."""
        from fieldlab.fields._fused_mlp import choose_kernel, encoding_matrix, fused_forward, pack

        x = points.coords if coords is None else coords
        device = next(iter(params.values())).device
        spec = None if self._shared else choose_kernel(self.config, device, self.kernel)
        if spec is not None:
            b = next(iter(params.values())).shape[0]
            buffers = {k: v.to(device) for k, v in self._buffers_one.items()} | dict(params)  # stored per field wins
            values = fused_forward(spec, pack(params, spec), x.to(device), encoding=encoding_matrix(spec, buffers, b))
            return Discretized(values, points)
        stack = self.stack(params)
        values = stack(x.to(device).expand(len(stack), *x.shape))
        return Discretized(values.float(), points)
