"""Fourier feature encodings (Tancik et al., "Fourier Features Let Networks Learn High Frequency Functions
in Low Dimensional Domains", NeurIPS 2020, https://arxiv.org/abs/2006.10739)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from fieldlab._precision import exact_linear, full


class GaussianFourierFeatures(nn.Module):
    """γ(x) = [cos(2π B x), sin(2π B x)] with B ~ N(0, σ²), shape (num_frequencies, in_dim).

    B is a persistent buffer, so a saved field keeps the frequencies it was trained with.
    """

    def __init__(self, *, in_dim: int, num_frequencies: int, sigma: float):
        super().__init__()
        self.register_buffer("frequencies", torch.randn(num_frequencies, in_dim) * sigma)

    @property
    def out_dim(self) -> int:
        return 2 * self.frequencies.shape[0]

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        with torch.autocast(coords.device.type, enabled=False):  # angles of tens of radians need fp32
            angles = 2 * math.pi * exact_linear(full(coords), self.frequencies)
            return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class PositionalEncoding(nn.Module):
    """γ(x) = [x, cos(2^k π x), sin(2^k π x) for k < num_frequencies], per coordinate (NeRF's encoding)."""

    def __init__(self, *, in_dim: int, num_frequencies: int):
        super().__init__()
        self.in_dim = in_dim
        self.register_buffer("scales", math.pi * 2.0 ** torch.arange(num_frequencies), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.in_dim * (1 + 2 * self.scales.numel())

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        coords = full(coords)
        angles = (coords[..., None] * self.scales).flatten(-2)  # (..., d·k)
        return torch.cat([coords, torch.cos(angles), torch.sin(angles)], dim=-1)
