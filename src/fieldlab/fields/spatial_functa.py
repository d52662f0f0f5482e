"""spatial functa: a grid of latents per datum, turned into a grid of shifts by a shared convolution and
read at each query point (Bauer et al., "Spatial functa: Scaling functa to ImageNet classification and
generation", 2023, https://arxiv.org/abs/2302.03130).

    β(x) = Interp(Conv(φ), x),   h_l = sin(ω₀ (W_l h_{l-1} + b_l + β_l(x)))

Readouts (as in the paper and its unofficial re-implementation):

- `nearest`: x takes the shift vector of the cell it falls in, and the SIREN's input is the local
  coordinate frac(S·u) ∈ [0, 1)² within that cell (u = (x + 1) / 2 ∈ [0, 1)²): every cell is a small
  field in one local frame.
- `bilinear`: the four nearest cell centres are blended, and the SIREN's input is the binary code of
  the pixel index (⌈log₂ n⌉ bits per axis, 10 bits for 32×32), so this readout is tied to the signal's
  sample grid (`resolution`, set by `adapt`).

Shapes: n points, C latent channels, S cells per axis, M = L·w shifts per cell.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
import torch.nn as nn

from fieldlab._errors import UserError
from fieldlab.fields._config import FieldConfig
from fieldlab.fields._registry import register_field
from fieldlab.fields.functa import ShiftModulatedSiren


def binary_code(index: torch.Tensor, bits: int) -> torch.Tensor:
    """Bits of integer `index` (n,) as floats (n, bits), least significant first."""
    powers = 2 ** torch.arange(bits, device=index.device)
    return ((index[:, None] // powers) % 2).float()


class SpatialFuncta(nn.Module):
    """A shift-modulated SIREN read from a per-field latent grid; `forward(coords (..., 2)) -> (..., c)`."""

    def __init__(self, *, out_dim: int, hidden_dim: int, num_layers: int, grid_size: int, latent_channels: int,
                 kernel_size: int, readout: str, resolution: tuple[int, int], omega0: float, first_omega0: float,
                 latent_init: float):
        super().__init__()
        self.num_layers, self.hidden_dim, self.grid_size, self.readout = num_layers, hidden_dim, grid_size, readout
        self.resolution = tuple(resolution)
        self.bits = tuple(max(1, math.ceil(math.log2(n))) for n in self.resolution)
        siren_in = 2 if readout == "nearest" else sum(self.bits)
        self.siren = ShiftModulatedSiren(in_dim=siren_in, out_dim=out_dim, hidden_dim=hidden_dim,
                                         num_layers=num_layers, omega0=omega0, first_omega0=first_omega0)
        self.to_shifts = nn.Conv2d(latent_channels, num_layers * hidden_dim, kernel_size, padding=kernel_size // 2)
        nn.init.kaiming_normal_(self.to_shifts.weight, nonlinearity="linear")
        nn.init.zeros_(self.to_shifts.bias)  # a zero latent leaves the SIREN as initialised
        self.latent = nn.Parameter(torch.randn(latent_channels, grid_size, grid_size) * latent_init)

    def shift_grid(self) -> torch.Tensor:
        """Conv(φ): (M, S, S)."""
        return self.to_shifts(self.latent[None])[0]

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        lead = coords.shape[:-1]
        u = (coords.reshape(-1, 2) + 1) / 2  # (n, 2) in [0, 1) over the domain
        grid = self.shift_grid()
        size = self.grid_size
        cells = grid.reshape(grid.shape[0], size * size)  # (M, S²)
        if self.readout == "nearest":
            t = u * size
            cell = t.floor().clamp(0, size - 1)
            siren_in = t - cell  # local coordinates in [0, 1)² inside the domain
            index = (cell[:, 0] * size + cell[:, 1]).long()
            shifts = cells[:, index].T  # (n, M)
        else:
            t = u * size - 0.5  # cell centres sit at integer t
            low = t.floor()
            frac = t - low
            low = low.long()
            shifts = 0
            for d0, d1 in ((0, 0), (0, 1), (1, 0), (1, 1)):
                row = (low[:, 0] + d0).clamp(0, size - 1)
                col = (low[:, 1] + d1).clamp(0, size - 1)
                weight = (frac[:, 0] if d0 else 1 - frac[:, 0]) * (frac[:, 1] if d1 else 1 - frac[:, 1])
                shifts = shifts + weight[:, None] * cells[:, row * size + col].T
            pixel = [(u[:, a] * n).floor().long().clamp(0, n - 1) for a, n in enumerate(self.resolution)]
            siren_in = torch.cat([binary_code(p, b) for p, b in zip(pixel, self.bits)], dim=-1).to(coords.dtype)
        shifts = shifts.reshape(-1, self.num_layers, self.hidden_dim)
        return self.siren.forward_shifted(siren_in, shifts).reshape(*lead, -1)


ITEM_CELL = 2
"""Samples per side of one latent cell in a dataset of small items (`item_defaults`)."""


@register_field("spatial_functa")
@dataclasses.dataclass(frozen=True)
class SpatialFunctaConfig(FieldConfig):
    """A shared SIREN shifted by a per-field latent grid through a shared convolution (2-D signals)."""

    hidden_dim: int = 256
    """Width of every sine layer (shared across the dataset)."""
    num_layers: int = 6
    """Number of sine layers; each takes a shift of `hidden_dim` values per latent cell."""
    grid_size: int = 8
    """Cells per axis of the latent grid (S); a dataset of small items gets a cell per 2×2 samples."""
    latent_channels: int = 16
    """Latent values per cell (C); a field's latent holds S·S·C values."""
    kernel_size: int = 1
    """Side of the shared convolution from latents to shifts (1 or 3 in the paper)."""
    readout: Literal["nearest", "bilinear"] = "nearest"
    """nearest: the cell's shifts and local coordinates; bilinear: blended shifts and binary pixel codes."""
    resolution: tuple[int, ...] = ()
    """Samples per axis whose pixel index `bilinear` encodes; set from the signal (32×32 if built alone)."""
    omega0: float = 10.0
    """Frequency factor ω₀ of the hidden sine layers."""
    first_omega0: float = 10.0
    """Frequency factor of the first sine layer."""
    latent_init: float = 0.01
    """Standard deviation of the latent of a field built alone; meta-learning starts each latent at zero."""

    lr = 1e-3
    may_be_zero = ("latent_init",)
    resolved = ("resolution",)

    def validate(self) -> None:
        super().validate()
        if self.in_dim != 2:
            raise UserError(f"spatial_functa fits 2-D signals (images), not {self.in_dim}-D ones")
        if self.kernel_size % 2 == 0:
            raise UserError(f"--kernel-size must be odd, got {self.kernel_size}")
        if self.resolution and (len(self.resolution) != 2 or min(self.resolution) < 1):
            raise UserError(f"--resolution must be two positive sample counts, got {self.resolution}")
        if self.latent_init < 0:
            raise UserError(f"--latent-init must be non-negative, got {self.latent_init}")

    def item_defaults(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """A latent cell of `ITEM_CELL` samples a side, up to the whole-signal grid (8×8 items: a 4×4 grid).

        With a cell per sample, the nearest readout gives every sample its own latent and local frame, so the
        field jumps at every sample border. On 8×8 grey photos (benchmarks/functa_between.py, 300 meta-steps,
        3 seeds; never the digits) a 4×4 grid fits the centres to 49.8 dB (8×8: 59.7) and reads the 32×32
        photo between them at 21.63 dB against 21.17 (+0.42 to +0.50 dB per seed). On 16×16 photos (one seed)
        cells of 2 samples (8×8) fit to 44.1 dB and read 25.21; cells of 4 read 25.34 but fit to 33.0 dB only.
        DI-Net trained on SIREN digits then reads these stores 4.2 and 5.2 points below SIREN's (8×8: 8.8)."""
        cells = math.ceil(max(shape) / ITEM_CELL)
        return {"grid_size": max(1, min(type(self).grid_size, cells))}

    def adapt(self, shape: tuple[int, ...]) -> SpatialFunctaConfig:
        return self.replace(resolution=tuple(shape)) if len(shape) == 2 else self

    def latent_shape(self) -> tuple[int, ...]:
        return (self.latent_channels, self.grid_size, self.grid_size)

    def latent_rate_scale(self) -> float:
        """A cell's latent sees the gradient of 1/S² of the points: its Meta-SGD rates are S² larger."""
        return float(self.grid_size ** 2)

    def build(self) -> SpatialFuncta:
        return SpatialFuncta(out_dim=self.out_dim, hidden_dim=self.hidden_dim, num_layers=self.num_layers,
                             grid_size=self.grid_size, latent_channels=self.latent_channels,
                             kernel_size=self.kernel_size, readout=self.readout,
                             resolution=self.resolution or (32, 32), omega0=self.omega0,
                             first_omega0=self.first_omega0, latent_init=self.latent_init)
