"""Point sets: where a network looks at a field, with the quadrature weights that turn sums into integrals.

A `PointSet` holds canonical coordinates in [-1, 1]^d and one weight per point; the weights sum to the
domain's volume 2^d, so Σ w f(x) estimates ∫ f. Every sampler states what it draws and never swaps one
sequence for another: a Sobol set is Sobol at any count, a Halton set is Halton.

Nested prefixes give multi-scale sets: the first m points of a Sobol/Halton set are themselves low
discrepancy, and grids are stored coarse-to-fine (every 2nd index along each axis first, then the
rest), so `downsample(2)` of a grid is exactly the stride-2 sub-grid a CNN would keep.

Shape letters: n points, d coordinate dims.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from typing import Any, Literal, Sequence

import torch

from fieldlab._errors import UserError, missing_extra

KINDS = ("grid", "qmc", "rqmc", "random", "shrunk", "mixed")
SEQUENCES = ("sobol", "halton")


@dataclasses.dataclass(frozen=True, eq=False)
class PointSet:
    """coords (n, d) in [-1, 1]^d and quadrature weights (n,) summing to the volume 2^d.

    `shape` and `raster` are set for grids: `raster[i]` is point i's index in row-major order of a
    `shape` grid, and `levels[i]` its coarseness (the number of times every index of it is divisible by
    2), non-increasing along the set, so coarse sub-grids are prefixes.
    """

    coords: torch.Tensor
    weights: torch.Tensor
    kind: str = "points"
    shape: tuple[int, ...] | None = None
    raster: torch.Tensor | None = None
    levels: torch.Tensor | None = None
    cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    """Neighbour lists computed on this set (filled by the DI layers; the set itself never changes)."""
    quadrature: str = "given"
    """"given": the sampler's weights (its density's); "cells": each point weighs its Voronoi cell's
    volume (`with_cell_weights`), and prefixes are re-weighted by their own cells."""

    def __len__(self) -> int:
        return self.coords.shape[0]

    @property
    def dim(self) -> int:
        return self.coords.shape[1]

    @property
    def volume(self) -> float:
        return 2.0 ** self.dim

    @property
    def is_grid(self) -> bool:
        return self.shape is not None

    def to(self, device: torch.device | str) -> PointSet:
        device = torch.device(device)
        if self.coords.device == device or device.type == self.coords.device.type == "cpu":
            return self
        key = ("to", str(device))
        if key not in self.cache:  # one copy per device, so neighbour lists cached on it are reused
            move = lambda t: None if t is None else t.to(device)  # noqa: E731
            self.cache[key] = PointSet(self.coords.to(device), self.weights.to(device), self.kind, self.shape,
                                       move(self.raster), move(self.levels), quadrature=self.quadrature)
        return self.cache[key]

    def share(self) -> torch.Tensor:
        """(n,) each point's share of the total weight, weights / Σ weights (cached): the weights of a
        quadrature mean over the domain."""
        if "share" not in self.cache:
            self.cache["share"] = self.weights / self.weights.sum()
        return self.cache["share"]

    def prefix(self, m: int) -> PointSet:
        """The first m points, re-weighted so the weights again sum to the volume."""
        if not 0 < m <= len(self):
            raise UserError(f"a prefix of {m} points is impossible in a set of {len(self)}")
        weights = self.weights[:m]
        weights = weights * (self.volume / weights.sum())
        if self.quadrature == "cells" and not self.is_grid:  # a prefix's cells are larger, and unequal
            weights = cell_volumes(self.coords[:m])
        cut = lambda t: None if t is None else t[:m]  # noqa: E731
        return PointSet(self.coords[:m], weights, self.kind, None, cut(self.raster), cut(self.levels),
                        quadrature=self.quadrature)

    def with_cell_weights(self) -> PointSet:
        """This set weighted by its points' Voronoi cell volumes in [-1, 1]^d (cached).

        A sampler's weights are right only on average: an i.i.d. set has clumps and holes, so in a small
        support it over-counts a clump and misses a hole (a ±1/√k error with k points inside). Weighting
        each point by the volume nearer to it than to any other makes the sum a Riemann sum of the
        points actually drawn, whatever their density. Grids keep their (exact) cell volumes.
        """
        if self.quadrature == "cells":
            return self
        if "cells" not in self.cache:
            weights = self.weights if self.is_grid else cell_volumes(self.coords)
            self.cache["cells"] = dataclasses.replace(self, weights=weights, cache={}, quadrature="cells")
        return self.cache["cells"]

    def downsample(self, factor: int) -> PointSet:
        """Keep about 1/factor^d of the points: the stride-`factor` sub-grid of a grid, else a prefix."""
        if factor == 1:
            return self
        key = ("downsample", factor)
        if key not in self.cache:  # one object per sub-set, so neighbour lists on it are reused
            self.cache[key] = self._downsample(factor)
        return self.cache[key]

    def _downsample(self, factor: int) -> PointSet:
        if self.levels is not None:
            level = int(round(math.log2(factor)))
            if 2 ** level != factor:
                raise UserError(f"grids downsample by powers of 2, not {factor}")
            if min(self.shape) >= factor:  # every index divisible by the factor: no read of a device tensor
                count = math.prod(-(-s // factor) for s in self.shape)
            else:  # an axis narrower than the factor, where `levels` caps index 0's count
                count = int((self.levels >= level).sum())
            out = self.prefix(count)
            return dataclasses.replace(out, cache={}, shape=_coarse_shape(self.shape, factor),
                                       levels=out.levels - level, raster=None)
        return self.prefix(max(1, round(len(self) / factor ** self.dim)))

    def grid_order(self) -> torch.Tensor:
        """Indices that put a grid's points in row-major order of `shape` (for `values[:, order]`)."""
        if self.shape is None:
            raise UserError("only grid point sets have a row-major order")
        if self.raster is None:  # a downsampled grid: recover the order from the coordinates
            return _row_major(self.coords)
        return torch.argsort(self.raster)


def cell_volumes(coords: torch.Tensor, probes_per_point: int = 16) -> torch.Tensor:
    """Voronoi cell volumes (n,) of `coords` (n, d) within [-1, 1]^d, summing to 2^d: a grid of about
    `probes_per_point` · n probe points, each counted for its nearest point. Every point keeps at least
    half a probe, so no point (a near-duplicate) drops out of the sums."""
    from fieldlab.learn._neighbors import nearest

    n, d = coords.shape
    side = max(2, math.ceil((probes_per_point * n) ** (1 / d)))
    _, owner = nearest(_probes(side, d, coords.device), coords.float(), 1)  # a k-d tree on the CPU, else chunked distances
    # counted by a sum into n slots (not bincount, which reads the largest index back to the host): a CUDA graph
    # can hold it (`learn.graphed`)
    owner = owner[:, 0]
    counts = torch.zeros(n, device=coords.device).index_add_(0, owner, torch.ones_like(owner, dtype=torch.float32))
    counts = counts.clamp_min(0.5)
    return counts * (2.0 ** d / counts.sum())


@functools.lru_cache(maxsize=16)
def _probes(side: int, d: int, device: torch.device) -> torch.Tensor:
    """(side^d, d) cell centres of a side^d grid over [-1, 1]^d (`cell_volumes`' probes, made once)."""
    axis = (torch.arange(side, dtype=torch.float32, device=device) + 0.5) * 2 / side - 1
    return torch.stack(torch.meshgrid(*[axis] * d, indexing="ij"), -1).reshape(-1, d)


def _coarse_shape(shape, factor):
    return None if shape is None else tuple(-(-s // factor) for s in shape)


def _row_major(coords: torch.Tensor) -> torch.Tensor:
    order = torch.arange(len(coords), device=coords.device)
    for axis in reversed(range(coords.shape[1])):  # stable sorts, last key first
        order = order[torch.argsort(coords[order, axis], stable=True)]
    return order


def _uniform(n: int, coords: torch.Tensor, kind: str, **grid) -> PointSet:
    d = coords.shape[1]
    return PointSet(coords.float(), torch.full((n,), 2.0 ** d / n), kind, **grid)


def _check_count(n: int, dim: int) -> None:
    if n < 1:
        raise UserError(f"a point set needs at least one point, got {n}")
    if not 1 <= dim <= 8:
        raise UserError(f"point sets have 1 to 8 dimensions, got {dim}")


# -- samplers ------------------------------------------------------------------------------------
def grid(shape: Sequence[int], *, order: Literal["coarse_to_fine", "raster"] = "coarse_to_fine") -> PointSet:
    """Cell centres of a `shape` grid (any sizes), as `Signal.coords` places samples; weights = cell volume.

    By default the points come coarse to fine (every other cell first, and so on), so a prefix of the set
    is itself a coarser grid; they are not in raster order. `values[:, points.grid_order()]` puts values
    at these points back in raster order, to reshape into an image; `order="raster"` lists them so.
    """
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise UserError(f"a grid needs positive sizes, got {shape}")
    _check_count(math.prod(shape), len(shape))
    axes = [(torch.arange(s, dtype=torch.float64) + 0.5) * 2 / s - 1 for s in shape]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(shape))
    index = torch.stack(torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, len(shape))
    levels = torch.stack([_trailing_zeros(index[:, a], s) for a, s in enumerate(shape)], -1).min(-1).values
    raster = torch.arange(coords.shape[0])
    if order == "coarse_to_fine":
        raster = torch.argsort(-levels, stable=True)
    elif order != "raster":
        raise UserError(f"grid order must be coarse_to_fine or raster, got {order!r}")
    return _uniform(len(raster), coords[raster], "grid", shape=shape, raster=raster, levels=levels[raster])


def _trailing_zeros(index: torch.Tensor, size: int) -> torch.Tensor:
    top = max(1, math.ceil(math.log2(size)) + 1)  # index 0 is divisible by everything: cap it
    tz = torch.zeros_like(index)
    for k in range(1, top + 1):
        tz = torch.where(index % (2 ** k) == 0, torch.full_like(index, k), tz)
    return tz


def qmc(n: int, dim: int, *, sequence: str = "sobol", scramble: bool = False, seed: int = 0) -> PointSet:
    """The first n points of a Sobol or Halton sequence (optionally scrambled), mapped to [-1, 1]^d."""
    _check_count(n, dim)
    u = _unit_qmc(n, dim, sequence, scramble, seed)
    return _uniform(n, 2 * u - 1, f"{'r' if scramble else ''}qmc-{sequence}")


def _unit_qmc(n: int, dim: int, sequence: str, scramble: bool, seed: int) -> torch.Tensor:
    if sequence == "sobol":
        engine = torch.quasirandom.SobolEngine(dim, scramble=scramble, seed=seed)
        return engine.draw(n, dtype=torch.float64)
    if sequence == "halton":
        try:
            from scipy.stats import qmc as scipy_qmc
        except ImportError:
            raise missing_extra("scipy", "learn") from None
        engine = scipy_qmc.Halton(dim, scramble=scramble, seed=seed)
        return torch.from_numpy(engine.random(n))
    raise UserError(f"unknown QMC sequence {sequence!r}; choose sobol or halton")


def uniform(n: int, dim: int, *, seed: int = 0) -> PointSet:
    """n i.i.d. uniform points over the whole domain [-1, 1]^d (Monte Carlo)."""
    _check_count(n, dim)
    generator = torch.Generator().manual_seed(seed)
    return _uniform(n, 2 * torch.rand(n, dim, generator=generator, dtype=torch.float64) - 1, "random")


def shrunk(n: int, dim: int, *, sequence: str = "sobol", seed: int = 0) -> PointSet:
    """DI-Net's warped set: scrambled QMC u, then x = u·|u| per axis (dense near the centre).

    The density of x is Π 1/(4√|x_a|), so the importance weight 1/p(x) ∝ Π |u_a|; the weights are
    self-normalized to sum to the volume, which makes weighted layers see the field, not the density.
    """
    _check_count(n, dim)
    u = 2 * _unit_qmc(n, dim, sequence, True, seed) - 1
    weights = u.abs().prod(-1).clamp_min(1e-12)
    weights = weights * (2.0 ** dim / weights.sum())
    return PointSet((u * u.abs()).float(), weights.float(), "shrunk")


# -- a sampler spec: what a network sees at every step -------------------------------------------
@dataclasses.dataclass(frozen=True)
class PointSampler:
    """Draws the point set for one step: `sampler(step)`. Deterministic in (seed, step).

    grid, qmc: the same set every step. rqmc, random, shrunk: a fresh draw every step (for `rqmc`, a new
    scrambling of the same sequence). mixed: one of `mix` per step.
    """

    kind: str = "qmc"
    n: int = 1024
    dim: int = 2
    sequence: str = "sobol"
    seed: int = 0
    mix: tuple[str, ...] = ("grid", "qmc", "shrunk")

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"unknown point set {self.kind!r}; choose from {', '.join(KINDS)}")
        if self.sequence not in SEQUENCES:
            raise UserError(f"unknown QMC sequence {self.sequence!r}; choose sobol or halton")
        for kind in self.mix if self.kind == "mixed" else ():
            if kind not in KINDS or kind == "mixed":
                raise UserError(f"--mix takes point sets among {', '.join(k for k in KINDS if k != 'mixed')}; "
                                f"got {kind!r}")
        _check_count(self.n, self.dim)
        if self.kind == "grid" or (self.kind == "mixed" and "grid" in self.mix):
            self.grid_shape()

    def grid_shape(self) -> tuple[int, ...]:
        side = round(self.n ** (1 / self.dim))
        if side ** self.dim != self.n:
            raise UserError(f"a grid of {self.n} points in {self.dim}-D is not square; use a count like {side ** self.dim}")
        return (side,) * self.dim

    def __call__(self, step: int = 0) -> PointSet:
        kind = self.kind
        if kind == "mixed":
            kind = self.mix[_step_seed(self.seed, step, "mix") % len(self.mix)]
        if kind in ("grid", "qmc"):  # fixed sets: one object, so neighbour lists cached on it are reused
            return _fixed(kind, self.n, self.dim, self.sequence)
        draw = _step_seed(self.seed, step, kind)
        if kind == "rqmc":
            return qmc(self.n, self.dim, sequence=self.sequence, scramble=True, seed=draw)
        if kind == "random":
            return uniform(self.n, self.dim, seed=draw)
        return shrunk(self.n, self.dim, sequence=self.sequence, seed=draw)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@functools.lru_cache(maxsize=32)
def _fixed(kind: str, n: int, dim: int, sequence: str) -> PointSet:
    if kind == "grid":
        side = round(n ** (1 / dim))
        return grid((side,) * dim)
    return qmc(n, dim, sequence=sequence, scramble=False)


def _step_seed(seed: int, step: int, salt: str) -> int:
    digest = hashlib.blake2b(f"{seed}/{step}/{salt}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")
