"""SIREN: sine-activated MLP (Sitzmann et al., "Implicit Neural Representations with Periodic
Activation Functions", NeurIPS 2020, https://arxiv.org/abs/2006.09661)."""

from __future__ import annotations

import dataclasses

from typing import Any

import torch

from fieldlab.fields._config import FieldConfig, per_item_side
from fieldlab.fields._mlp import MLP, sine_init_
from fieldlab.fields._registry import register_field
from fieldlab.kernels import FusedSpec
from fieldlab._precision import full


class Siren(MLP):
    """y = W_L · sin(ω₀ (W_{L-1} … sin(ω₀' (W_0 x + b_0)) … + b_{L-1})) + b_L, with ω₀' the first layer's."""

    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int, num_layers: int, omega0: float,
                 first_omega0: float):
        super().__init__(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim, num_layers=num_layers)
        self.omega0, self.first_omega0 = omega0, first_omega0
        sine_init_(self, omega0)

    def activation(self, z: torch.Tensor, layer_index: int) -> torch.Tensor:
        return torch.sin((self.first_omega0 if layer_index == 0 else self.omega0) * full(z))


@register_field("siren")
@dataclasses.dataclass(frozen=True)
class SirenConfig(FieldConfig):
    """Sine activations; ω₀ sets the bandwidth the field can represent."""

    hidden_dim: int = 256
    """Width of every activated layer."""
    num_layers: int = 4
    """Number of activated layers (the first maps coordinates in); a linear head follows."""
    omega0: float = 30.0
    """Frequency factor ω₀ of the hidden sine layers."""
    first_omega0: float = 30.0
    """Frequency factor of the first layer (raise it for signals with many samples per axis)."""

    lr = 1e-3

    def item_defaults(self, shape: tuple[int, ...]) -> dict[str, Any]:
        # ω₀ 5 per 8 samples: on 8×8 validation photos ω₀ 30 fits the centres to 120 dB but is noise between
        # them (17.0 dB against the 32×32 photo; bicubic 26.1), ω₀ 5 gives 23.9 dB at a 40.7 dB fit
        # (benchmarks/bandwidth_sweep.py).
        omega = per_item_side(5.0, shape, type(self).omega0)
        return {"hidden_dim": 32, "num_layers": 2, "omega0": omega, "first_omega0": omega}

    def build(self) -> Siren:
        return Siren(in_dim=self.in_dim, out_dim=self.out_dim, hidden_dim=self.hidden_dim,
                     num_layers=self.num_layers, omega0=self.omega0, first_omega0=self.first_omega0)

    def fused_spec(self) -> FusedSpec:
        return FusedSpec(self.in_dim, self.hidden_dim, self.out_dim, self.num_layers, "sine",
                         float(self.first_omega0), float(self.omega0))
