"""FieldBatch: a batch of stored fields evaluated at a point set through the batched path.

Per-field tensors (a SIREN's whole parameter set, or a functa latent) arrive stacked (b, ...) and are
handed to one `FieldStack` as overrides, so b fields are evaluated by one vmapped call — no Python loop
over fields — with shared tensors (functa's network) held once. On CUDA, SIREN, Gaussian and Fourier-feature
MLP fields go through the fused forward kernel instead (`fieldlab.kernels`, `kernel="auto"`), which keeps the
activations in registers; `kernel="reference"` forces the vmapped path.
"""

from __future__ import annotations

import torch

from fieldlab.fields import FieldConfig, FieldStack, restore_buffer
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
        device = next(iter(params.values())).device
        buffers = self._field_buffers(params)
        shared = {k: v.to(device) for k, v in self._shared.items()}
        return FieldStack(self._template, {k: v for k, v in params.items() if k not in buffers}, buffers, shared=shared)

    def _field_buffers(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The fields' buffers (b, ...). A store keeps some per field (a Fourier field's random frequencies):
        those win over the template's, back in the template's dtype, since a store holds every tensor as
        float32 (a Local-Global field's partition slots are integer indices)."""
        one = next(iter(params.values()))
        return {k: restore_buffer(params[k], v) if k in params else v.to(one.device).expand(one.shape[0], *v.shape)
                for k, v in self._buffers_one.items()}

    def values(self, params: dict[str, torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
        """Values (b, n, c) at `coords` (n, d) by the vmapped path, differentiable in `params` (a
        hypernetwork's generated weights)."""
        stack = self.stack(params)
        weights = {k: v for k, v in params.items() if k not in self._buffers_one}
        return stack(coords.expand(len(stack), *coords.shape), params=weights)

    @torch.no_grad()
    def forward(self, params: dict[str, torch.Tensor], points: PointSet,
                coords: torch.Tensor | None = None) -> Discretized:
        """Values (b, n, c) of the fields at `points` (or at `coords` (n, d), e.g. jittered, labelled as `points`)."""
        from fieldlab.kernels import choose_kernel, encoding_matrix, fused_forward, pack

        device = next(iter(params.values())).device
        x = (points.coords if coords is None else coords).to(device)
        spec = None if self._shared else choose_kernel(self.config, device, self.kernel, forward=True)
        if spec is not None:
            b = next(iter(params.values())).shape[0]
            encoding = encoding_matrix(spec, self._field_buffers(params), b)
            return Discretized(fused_forward(spec, pack(params, spec), x, encoding=encoding), points)
        return Discretized(self.values(params, x).float(), points)
