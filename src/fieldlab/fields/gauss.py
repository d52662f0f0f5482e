"""Gaussian-activated MLP, exp(-(s z)²) (Ramasinghe & Lucey, "Beyond Periodicity: Towards a Unifying
Framework for Activations in Coordinate-MLPs", ECCV 2022, https://arxiv.org/abs/2111.15135)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from fieldlab.fields._config import FieldConfig, per_item_side
from fieldlab.fields._mlp import MLP
from fieldlab.fields._registry import register_field
from fieldlab.kernels import FusedSpec
from fieldlab._precision import full


class Gauss(MLP):
    """Activation exp(-(s z)²); PyTorch's default initialisation (the method needs no special one)."""

    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int, num_layers: int, scale: float):
        super().__init__(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim, num_layers=num_layers)
        self.scale = scale

    def activation(self, z: torch.Tensor, layer_index: int) -> torch.Tensor:
        return torch.exp(-(self.scale * full(z)).square())


@register_field("gauss")
@dataclasses.dataclass(frozen=True)
class GaussConfig(FieldConfig):
    """Gaussian activations; the scale s sets the bandwidth."""

    hidden_dim: int = 256
    """Width of every activated layer."""
    num_layers: int = 4
    """Number of activated layers (the first maps coordinates in); a linear head follows."""
    scale: float = 20.0
    """s in exp(-(s z)²)."""

    lr = 1e-2

    def item_defaults(self, shape: tuple[int, ...]) -> dict[str, Any]:
        # Scale 2 per 8 samples: on 8×8 validation photos scale 20 fits only to 22 dB, and is noise between
        # the centres (16.0 dB against the 32×32 photo); scale 2 gives 24.5 dB at a 44.8 dB fit
        # (benchmarks/bandwidth_sweep.py).
        return {"scale": per_item_side(2.0, shape, type(self).scale)}

    def build(self) -> Gauss:
        return Gauss(in_dim=self.in_dim, out_dim=self.out_dim, hidden_dim=self.hidden_dim,
                     num_layers=self.num_layers, scale=self.scale)

    def fused_spec(self) -> FusedSpec:
        return FusedSpec(self.in_dim, self.hidden_dim, self.out_dim, self.num_layers, "gauss",
                         float(self.scale), float(self.scale))
