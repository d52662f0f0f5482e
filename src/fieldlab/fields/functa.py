"""functa: a shared SIREN whose sine layers are shifted by a linear map of a per-datum latent vector
(Dupont et al., "From data to functa: Your data point is a function and you can treat it like one",
ICML 2022, https://arxiv.org/abs/2201.12204).

    h_0 = x,   h_l = sin(ω₀ (W_l h_{l-1} + b_l + β_l)),   f(x) = W_L h_{L-1} + b_L,   β = A φ + c

One module is one field: the shared network (SIREN weights, A, c) plus that field's `latent` φ. A
dataset of functa is a `FieldStack` whose stacked parameter is `latent` and whose `shared` parameters
are everything else (`fieldlab.fit.meta` meta-learns them and fits the latents).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn as nn

from fieldlab._errors import UserError
from fieldlab._precision import exact_linear, full
from fieldlab.fields._config import FieldConfig, per_item_side
from fieldlab.fields._registry import register_field
from fieldlab.fields.siren import Siren

LATENT = "latent"
"""The name of the per-field parameter of every latent-modulated field; everything else is shared."""


class ShiftModulatedSiren(Siren):
    """A SIREN whose activated layers take additive shifts: `forward_shifted(x, shifts (..., L, w))`."""

    def forward_shifted(self, x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        first = self.layers[0]
        with torch.autocast(x.device.type, enabled=False):  # phases stay exact (see `MLP.forward`)
            x = self.activation(exact_linear(full(x), first.weight, first.bias) + full(shifts[..., 0, :]), 0)
        for i, layer in enumerate(self.layers[1:-1], start=1):
            x = self.activation(layer(x) + shifts[..., i, :], i)
        return self.layers[-1](x)


class Functa(nn.Module):
    """A shift-modulated SIREN and one latent vector; `forward(coords (..., d)) -> values (..., c)`."""

    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int, num_layers: int, latent_dim: int,
                 omega0: float, first_omega0: float, latent_init: float):
        super().__init__()
        self.num_layers, self.hidden_dim = num_layers, hidden_dim
        self.siren = ShiftModulatedSiren(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim,
                                         num_layers=num_layers, omega0=omega0, first_omega0=first_omega0)
        self.to_shifts = nn.Linear(latent_dim, num_layers * hidden_dim)
        nn.init.zeros_(self.to_shifts.bias)  # a zero latent leaves the SIREN as initialised
        self.latent = nn.Parameter(torch.randn(latent_dim) * latent_init)

    def shifts(self) -> torch.Tensor:
        """β = A φ + c, one row per activated layer: (L, w)."""
        return self.to_shifts(self.latent).reshape(self.num_layers, self.hidden_dim)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.siren.forward_shifted(coords, self.shifts())


@register_field("functa")
@dataclasses.dataclass(frozen=True)
class FunctaConfig(FieldConfig):
    """A shared SIREN shifted by a per-field latent vector (meta-learned across a dataset)."""

    hidden_dim: int = 256
    """Width of every sine layer (shared across the dataset)."""
    num_layers: int = 5
    """Number of sine layers; each takes a shift of `hidden_dim` values from the latent."""
    latent_dim: int = 128
    """Size of the per-field latent vector φ (functa's d: 64 to 1024)."""
    omega0: float = 30.0
    """Frequency factor ω₀ of the hidden sine layers."""
    first_omega0: float = 30.0
    """Frequency factor of the first sine layer."""
    latent_init: float = 0.01
    """Standard deviation of the latent of a field built alone, so that a single fit trains A from the
    first step; meta-learning and dataset fitting always start each latent at zero."""

    lr = 1e-3
    may_be_zero = ("latent_init",)

    def validate(self) -> None:
        super().validate()
        if self.latent_init < 0:
            raise UserError(f"--latent-init must be non-negative, got {self.latent_init}")

    def latent_shape(self) -> tuple[int, ...]:
        return (self.latent_dim,)

    def latent_rate_scale(self) -> float:
        """Meta-SGD rates are this multiple of their clipped [0, 1] value (1: functa's own scale)."""
        return 1.0

    def item_defaults(self, shape: tuple[int, ...]) -> dict[str, Any]:
        # ω₀ 20 per 8 samples, 30 (functa's own) from 12 samples on: on 8×8 validation photos after 300
        # meta-steps, ω₀ 8 is the best between the centres (21.1 dB against the 32×32 photo, bicubic 26.1)
        # but fits the centres to 30 dB only; ω₀ 20 is the lowest to fit them to 40 dB (46.4), at 15.9 dB
        # between them (benchmarks/bandwidth_sweep.py; spatial functa's own ω₀ 10 won its sweep).
        omega = per_item_side(20.0, shape, type(self).omega0)
        return {"omega0": omega, "first_omega0": omega}

    def build(self) -> Functa:
        return Functa(in_dim=self.in_dim, out_dim=self.out_dim, hidden_dim=self.hidden_dim,
                      num_layers=self.num_layers, latent_dim=self.latent_dim, omega0=self.omega0,
                      first_omega0=self.first_omega0, latent_init=self.latent_init)
