"""FINER: variable-periodic activation sin(ω₀ (|z| + 1) z) (Liu et al., "FINER: Flexible Spectral-bias
Tuning in Implicit NEural Representation by Variable-periodic Activation Functions", CVPR 2024,
https://arxiv.org/abs/2312.02434)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from fieldlab.fields._config import FieldConfig, per_item_side
from fieldlab.fields._mlp import MLP, sine_init_
from fieldlab.fields._registry import register_field
from fieldlab._precision import full


class Finer(MLP):
    """SIREN's layers with the activation sin(ω₀ (|z| + 1) z).

    The scale |z| + 1 is treated as a constant in the backward pass, as in the paper's reference setup;
    a first-layer bias drawn from U(-k, k) with a large k widens the initial spectrum.
    """

    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int, num_layers: int, omega0: float,
                 first_bias_scale: float):
        super().__init__(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim, num_layers=num_layers)
        self.omega0 = omega0
        sine_init_(self, omega0)
        if first_bias_scale > 0:
            with torch.no_grad():
                self.layers[0].bias.uniform_(-first_bias_scale, first_bias_scale)

    def activation(self, z: torch.Tensor, layer_index: int) -> torch.Tensor:
        z = full(z)
        return torch.sin(self.omega0 * (z.detach().abs() + 1) * z)


@register_field("finer")
@dataclasses.dataclass(frozen=True)
class FinerConfig(FieldConfig):
    """Variable-periodic sine activations: a wider spectrum than SIREN at equal size."""

    hidden_dim: int = 256
    """Width of every activated layer."""
    num_layers: int = 4
    """Number of activated layers (the first maps coordinates in); a linear head follows."""
    omega0: float = 30.0
    """Frequency factor ω₀ of every layer."""
    first_bias_scale: float = 2.0
    """k of the first layer's bias init U(-k, k); 0 keeps PyTorch's default."""

    lr = 1e-3
    may_be_zero = ("first_bias_scale",)

    def item_defaults(self, shape: tuple[int, ...]) -> dict[str, Any]:
        # ω₀ 3 per 8 samples and a first-layer bias in ±0.5: the bias widens FINER's spectrum whatever ω₀ is,
        # so on 8×8 validation photos the whole-image ω₀ 30 with ±2 is noise between the centres (15.8 dB
        # against the 32×32 photo, bicubic 26.1), ω₀ 3 with ±0.5 gives 22.2 dB at a 66.7 dB fit
        # (benchmarks/bandwidth_sweep.py).
        return {"omega0": per_item_side(3.0, shape, type(self).omega0), "first_bias_scale": 0.5}

    def build(self) -> Finer:
        return Finer(in_dim=self.in_dim, out_dim=self.out_dim, hidden_dim=self.hidden_dim,
                     num_layers=self.num_layers, omega0=self.omega0, first_bias_scale=self.first_bias_scale)
