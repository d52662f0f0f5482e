"""Multiresolution hash grid and a small ReLU MLP (instant-NGP, Müller et al. 2022,
https://arxiv.org/abs/2201.05989), in pure PyTorch."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn as nn

from fieldlab._validate import LIMITS
from fieldlab.encodings import HashGridEncoding
from fieldlab.fields._config import FieldConfig
from fieldlab.fields._mlp import ReluMLP
from fieldlab.fields._registry import register_field


class HashGrid(nn.Module):
    """Hash-encoded features → ReLU MLP → values."""

    def __init__(self, *, encoding: HashGridEncoding, out_dim: int, hidden_dim: int, num_layers: int):
        super().__init__()
        self.encoding = encoding
        self.mlp = ReluMLP(in_dim=encoding.out_dim, out_dim=out_dim, hidden_dim=hidden_dim, num_layers=num_layers)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encoding(coords))


@register_field("hashgrid")
@dataclasses.dataclass(frozen=True)
class HashGridConfig(FieldConfig):
    """Hash-grid features and a small MLP; `--params` sizes the hash tables."""

    table_size: int = 2**15
    """Entries per level's table (instant-NGP's T); finer levels hash into it."""
    num_levels: int = 16
    """Number of grid resolutions."""
    features_per_level: int = 2
    """Feature channels stored per grid vertex."""
    base_resolution: int = 16
    """Cells per axis of the coarsest grid."""
    max_resolution: int = 0
    """Cells per axis of the finest grid; 0 sets it to the signal's largest sample count per axis
    (2048 for a field built without a signal)."""
    hidden_dim: int = 64
    """Width of the MLP."""
    num_layers: int = 2
    """Activated layers of the MLP."""

    size_knob = "table_size"
    # The table is hashed, so its size is bounded by the parameter count alone; a resolution may reach a
    # signal's sample count along one axis.
    maxima = {**FieldConfig.maxima, "num_levels": LIMITS.layers, "table_size": LIMITS.params,
              "base_resolution": LIMITS.samples, "max_resolution": LIMITS.samples}
    may_be_zero = ("max_resolution",)
    lr = 2e-2
    adam_eps = 1e-15
    adam_betas = (0.9, 0.99)

    def adapt(self, shape: tuple[int, ...]) -> HashGridConfig:
        if self.max_resolution:
            return self
        return self.replace(max_resolution=max(max(shape), self.base_resolution))

    def item_defaults(self, shape: tuple[int, ...]) -> dict[str, Any]:
        # 16 levels at one resolution sharing one table entry stayed at ~9 dB on 8×8 digits. The finest
        # resolution stays the item's side (`adapt`): on 8×8 validation photos it beats 2, 4, 16 and 32
        # between the centres (26.2 dB against the 32×32 photo, bicubic 26.1; benchmarks/bandwidth_sweep.py).
        return {"num_levels": 4, "base_resolution": 2, "hidden_dim": 16}

    def build(self) -> HashGrid:
        encoding = HashGridEncoding(in_dim=self.in_dim, num_levels=self.num_levels,
                                    features_per_level=self.features_per_level, table_size=self.table_size,
                                    base_resolution=self.base_resolution,
                                    max_resolution=self.max_resolution or 2048)
        return HashGrid(encoding=encoding, out_dim=self.out_dim, hidden_dim=self.hidden_dim, num_layers=self.num_layers)
