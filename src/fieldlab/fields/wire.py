"""WIRE: complex Gabor wavelet activations (Saragadam et al., "WIRE: Wavelet Implicit Neural
Representations", CVPR 2023, https://arxiv.org/abs/2301.05187).

Complex numbers are carried as (real, imaginary) pairs of real tensors, so the field trains in bf16,
compiles, batches with vmap and saves to safetensors like every other field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn as nn

from fieldlab.fields._config import FieldConfig, per_item_side
from fieldlab.fields._registry import register_field
from fieldlab._precision import exact_linear, full


class Wire(nn.Module):
    """ψ(z) = exp(i ω₀ z) · exp(-|s₀ z|²) after every layer; the first layer is real, the others complex,
    and the output is the real part of a complex linear head.

    For z = a + ib: ψ(z) = exp(-ω₀ b - s₀² (a² + b²)) · (cos ω₀a + i sin ω₀a).
    """

    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int, num_layers: int, omega0: float, scale: float):
        super().__init__()
        self.omega0, self.scale = omega0, scale
        self.first = nn.Linear(in_dim, hidden_dim)
        dims = [hidden_dim] * num_layers + [out_dim]
        bounds = [d**-0.5 for d in dims[:-1]]  # PyTorch's default U(-1/√in, 1/√in), for both parts
        self.weights_re = nn.ParameterList(nn.Parameter(torch.empty(b, a).uniform_(-s, s)) for a, b, s in zip(dims[:-1], dims[1:], bounds))
        self.weights_im = nn.ParameterList(nn.Parameter(torch.empty(b, a).uniform_(-s, s)) for a, b, s in zip(dims[:-1], dims[1:], bounds))
        self.biases_re = nn.ParameterList(nn.Parameter(torch.empty(b).uniform_(-s, s)) for b, s in zip(dims[1:], bounds))
        # The head's imaginary bias would never reach the (real) output: hidden layers only.
        self.biases_im = nn.ParameterList(nn.Parameter(torch.empty(b).uniform_(-s, s)) for b, s in zip(dims[1:-1], bounds))

    def _gabor(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = full(a), full(b)  # exponent and phase in fp32, also under bf16 autocast
        envelope = torch.exp(-self.omega0 * b - self.scale**2 * (a.square() + b.square()))
        phase = self.omega0 * a
        return envelope * torch.cos(phase), envelope * torch.sin(phase)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        with torch.autocast(coords.device.type, enabled=False):  # as MLP: the first layer stays fp32
            z = exact_linear(full(coords), self.first.weight, self.first.bias)
            a, b = self._gabor(z, torch.zeros_like(z))
        for wr, wi, br, bi in zip(self.weights_re, self.weights_im, self.biases_re, self.biases_im):
            a, b = self._gabor(a @ wr.T - b @ wi.T + br, a @ wi.T + b @ wr.T + bi)
        return a @ self.weights_re[-1].T - b @ self.weights_im[-1].T + self.biases_re[-1]


@register_field("wire")
@dataclasses.dataclass(frozen=True)
class WireConfig(FieldConfig):
    """Complex Gabor wavelets: ω₀ sets the frequency, s₀ the spatial spread."""

    hidden_dim: int = 180
    """Width of every activated layer (complex layers hold twice the scalars of a real one)."""
    num_layers: int = 4
    """Number of activated layers (the first maps coordinates in); a complex linear head follows."""
    omega0: float = 20.0
    """Frequency ω₀ of the wavelet."""
    scale: float = 20.0
    """Spread s₀ of the Gaussian envelope."""

    lr = 1e-2

    def item_defaults(self, shape: tuple[int, ...]) -> dict[str, Any]:
        # ω₀ 2 and scale 2 per 8 samples: on 8×8 validation photos the whole-image 20 and 20 fit only to
        # 21 dB (16.6 dB against the 32×32 photo); 2 and 2 give 24.0 dB at a 56.5 dB fit
        # (benchmarks/bandwidth_sweep.py).
        return {"omega0": per_item_side(2.0, shape, type(self).omega0),
                "scale": per_item_side(2.0, shape, type(self).scale)}

    def build(self) -> Wire:
        return Wire(in_dim=self.in_dim, out_dim=self.out_dim, hidden_dim=self.hidden_dim,
                    num_layers=self.num_layers, omega0=self.omega0, scale=self.scale)
