"""ReLU MLP on Fourier features: Gaussian random features (Tancik et al. 2020,
https://arxiv.org/abs/2006.10739) or deterministic positional encoding (NeRF, Mildenhall et al. 2020)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
import torch.nn as nn

from fieldlab._errors import UserError
from fieldlab.encodings import GaussianFourierFeatures, PositionalEncoding
from fieldlab.fields._config import FieldConfig, per_item_side
from fieldlab.fields._mlp import ReluMLP
from fieldlab.fields._registry import register_field
from fieldlab.kernels import FusedSpec


class FourierMLP(nn.Module):
    """ReLU MLP on an encoding γ(x) that reports its `out_dim`."""

    def __init__(self, *, encoding: nn.Module, out_dim: int, hidden_dim: int, num_layers: int):
        super().__init__()
        self.encoding = encoding
        self.mlp = ReluMLP(in_dim=encoding.out_dim, out_dim=out_dim, hidden_dim=hidden_dim, num_layers=num_layers)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encoding(coords))


@register_field("fourier")
@dataclasses.dataclass(frozen=True)
class FourierConfig(FieldConfig):
    """ReLU MLP on Fourier features; σ (Gaussian) or the number of octaves (positional) sets the bandwidth."""

    hidden_dim: int = 256
    """Width of every activated layer."""
    num_layers: int = 4
    """Number of activated layers; a linear head follows."""
    encoding: Literal["gaussian", "positional"] = "gaussian"
    """Gaussian random Fourier features, or NeRF's deterministic positional encoding."""
    num_frequencies: int = 0
    """Random frequencies (gaussian) or octaves per coordinate (positional); 0 takes 256 or 10."""
    sigma: float = 10.0
    """Standard deviation of the Gaussian frequencies, in cycles per unit of canonical coordinates."""

    lr = 4e-3
    may_be_zero = ("num_frequencies",)

    def validate(self) -> None:
        super().validate()
        if self.encoding == "positional" and self.num_frequencies > 24:
            raise UserError(f"--num-frequencies {self.num_frequencies} is too many octaves for positional "
                            "encoding (at most 24)")

    @property
    def frequencies(self) -> int:
        """`num_frequencies`, or its default when 0: 256 random frequencies, or 10 octaves."""
        return self.num_frequencies or (256 if self.encoding == "gaussian" else 10)

    def item_defaults(self, shape: tuple[int, ...]) -> dict[str, Any]:
        # Sized by its width alone, a Fourier field kept 256 frequencies behind a width of 2 and stayed at
        # ~9 dB on 8×8 digits. σ 0.25 cycles per unit per 8 samples: on 8×8 validation photos σ 10 is noise
        # between the centres (14.8 dB against the 32×32 photo), σ 0.25 gives 23.7 dB at a 47.9 dB fit
        # (benchmarks/bandwidth_sweep.py). Positional octaves stop at the item's Nyquist frequency.
        if self.encoding == "positional":
            return {"num_frequencies": max(1, math.ceil(math.log2(max(shape)))), "hidden_dim": 32, "num_layers": 2}
        return {"num_frequencies": 16, "hidden_dim": 32, "num_layers": 2,
                "sigma": per_item_side(0.25, shape, type(self).sigma)}

    def build(self) -> FourierMLP:
        if self.encoding == "gaussian":
            encoding = GaussianFourierFeatures(in_dim=self.in_dim, num_frequencies=self.frequencies, sigma=self.sigma)
        else:
            encoding = PositionalEncoding(in_dim=self.in_dim, num_frequencies=self.frequencies)
        return FourierMLP(encoding=encoding, out_dim=self.out_dim, hidden_dim=self.hidden_dim, num_layers=self.num_layers)

    def fused_spec(self) -> FusedSpec:
        rows = self.frequencies * (1 if self.encoding == "gaussian" else self.in_dim)  # octaves per coordinate
        return FusedSpec(self.in_dim, self.hidden_dim, self.out_dim, self.num_layers, "relu", 1.0, 1.0,
                         encoding=self.encoding, frequencies=rows, prefix="mlp.")
