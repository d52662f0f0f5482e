"""Multiresolution hash encoding in pure PyTorch (Müller et al., "Instant Neural Graphics Primitives with
a Multiresolution Hash Encoding", SIGGRAPH 2022, https://arxiv.org/abs/2201.05989).

Shape letters: n points, l levels, k corners (2^d), d coordinate dims, f features per level.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from fieldlab._precision import full
from fieldlab.kernels import hashgrid as hash_kernels

# One prime per dimension (the paper's; the first is 1 so that 1D hashing is the identity).
_PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737, 334960913)


class HashGridEncoding(nn.Module):
    """Features interpolated from `num_levels` grids of resolutions growing geometrically from
    `base_resolution` to `max_resolution`; a level whose grid has more vertices than `table_size`
    is hashed into a table of that size, coarser levels are indexed densely (no collisions).

    Coordinates are canonical, in [-1, 1]^d; points outside are clamped to the border.
    """

    def __init__(self, *, in_dim: int, num_levels: int, features_per_level: int, table_size: int,
                 base_resolution: int, max_resolution: int):
        super().__init__()
        self.in_dim, self.features_per_level = in_dim, features_per_level
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(num_levels - 1, 1))
        resolutions = [int(math.floor(base_resolution * growth**level)) for level in range(num_levels)]
        sizes = [min(table_size, (r + 1) ** in_dim) for r in resolutions]
        hashed = [(r + 1) ** in_dim > table_size for r in resolutions]
        # Resolutions are monotonic, so the levels of each kind are contiguous: (first, stop, hashed) runs,
        # the hashed ones the finest (growing resolutions) or the first (a base above the maximum).
        split = next((i for i, h in enumerate(hashed) if h != hashed[0]), num_levels)
        self.level_runs = [(0, split, hashed[0])] + ([(split, num_levels, not hashed[0])] if split < num_levels else [])
        assert all(hashed[i] == kind for first, stop, kind in self.level_runs for i in range(first, stop))
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.table = nn.Parameter(torch.empty(offsets[-1], features_per_level).uniform_(-1e-4, 1e-4))
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.float32), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets[:-1]), persistent=False)
        self.register_buffer("hashed", torch.tensor(hashed), persistent=False)
        corners = torch.tensor([[(c >> i) & 1 for i in range(in_dim)] for c in range(2**in_dim)])
        # (k, d); `_corners` takes the bits from the corner's number: kept for the stores that list it
        self.register_buffer("corners", corners, persistent=False)
        # in Python ints: arithmetic on tensors of the meta device (num_params) would import torch._dynamo (~2 s)
        strides = torch.tensor([[(r + 1) ** i for i in range(in_dim)] for r in resolutions])
        self.register_buffer("strides", strides, persistent=False)  # (l, d)
        self.register_buffer("primes", torch.tensor(_PRIMES[:in_dim]), persistent=False)

    def _corners(self, low: torch.Tensor, frac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Table rows within each level (k, n, l) and multilinear weights (k, n, l) of the 2^d corners of the
        cells whose lower vertices are `low` (n, l, d), at fractions `frac` (n, l, d). Along axis i a corner
        takes the vertex lowᵢ or lowᵢ + 1 (its bit i) with the factor 1 − fracᵢ or fracᵢ. A dense level's row
        is Σᵢ vᵢ (r+1)^i, a hashed level's XORᵢ vᵢ·primeᵢ mod its size. Built from (n, l) slices, one corner
        at a time: (n, l, k, d) int64 tensors cost a CPU step more than the rest of the encoding."""
        d = self.in_dim
        rows, weights = [], []
        for corner in range(2 ** d):
            bits = [(corner >> i) & 1 for i in range(d)]
            vertex = [low[:, :, i] + bits[i] for i in range(d)]
            weight = frac[:, :, 0] if bits[0] else 1 - frac[:, :, 0]
            for i in range(1, d):
                weight = weight * (frac[:, :, i] if bits[i] else 1 - frac[:, :, i])
            runs = [self._rows([v[:, first:stop] for v in vertex], first, stop, hashed)
                    for first, stop, hashed in self.level_runs]
            rows.append(runs[0] if len(runs) == 1 else torch.cat(runs, dim=1))
            weights.append(weight)
        return torch.stack(rows), torch.stack(weights)  # corner-major: each corner's (n, l) block contiguous

    def _rows(self, vertex: list[torch.Tensor], first: int, stop: int, hashed: bool) -> torch.Tensor:
        """Rows (n, stop − first) of levels first … stop − 1, all of one kind, from a corner's vertex along
        each axis (n, stop − first)."""
        if hashed:
            index = vertex[0] * self.primes[0]
            for i in range(1, self.in_dim):
                index = index ^ (vertex[i] * self.primes[i])
            return index % self.sizes[first:stop]
        index = vertex[0] * self.strides[first:stop, 0]
        for i in range(1, self.in_dim):
            index = index + vertex[i] * self.strides[first:stop, i]
        return index

    @property
    def levels(self) -> tuple[torch.Tensor, ...]:
        """What the kernels (`kernels.hashgrid.encode`) read of the levels: resolutions, sizes, offsets, which
        are hashed, and the primes."""
        return self.resolutions, self.sizes, self.offsets, self.hashed, self.primes

    @property
    def out_dim(self) -> int:
        return self.resolutions.numel() * self.features_per_level

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        lead = coords.shape[:-1]
        flat = full(coords.reshape(-1, self.in_dim))
        if hash_kernels.usable(flat, self.table, self.levels):  # on CUDA: two Triton launches (kernels.hashgrid)
            return hash_kernels.encode(flat, self.table, self.levels).reshape(*lead, self.out_dim)
        x = ((flat + 1) / 2).clamp(0, 1)  # (n, d) in [0, 1]
        pos = x[:, None, :] * self.resolutions[:, None]  # (n, l, d)
        base = pos.floor().minimum(self.resolutions[:, None] - 1)  # x = 1 lands in the last cell
        frac = pos - base
        index, weights = self._corners(base.long(), frac)  # (k, n, l) each
        # index_select, not table[index]: its gradient is an index_add_ (atomic adds) where advanced indexing's
        # is an accumulating index_put_, which sorts the n·l·k indices on CUDA at every step
        rows = (index + self.offsets).reshape(-1)
        features = torch.index_select(self.table, 0, rows).view(*index.shape, self.features_per_level)  # (k, n, l, f)
        # the corners' sum, one contiguous (n, l, f) block at a time (unbind: one stack of gradients backward)
        out = None
        for corner, weight in zip(features.unbind(0), weights.to(features.dtype).unbind(0)):
            term = corner * weight[..., None]
            out = term if out is None else out + term  # (n, l, f)
        return out.reshape(*lead, self.out_dim)
