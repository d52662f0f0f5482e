"""Sparse radius search: the (query, source) pairs whose displacement lies in a support.

Sources are hashed into a grid of cells at least as wide as the support, sorted by cell key, and each
query looks up the 3^d cells around it with `searchsorted`; candidates are then tested exactly. Work
and memory grow with the number of pairs, never with n·m, and queries are processed in chunks.
Pairs come back sorted by query, i.e. in CSR order. Small problems (a few hundred points a side, where
hashing costs more than it saves) test every (query, source) pair directly, in a handful of tensor ops.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import torch

from fieldlab._errors import UserError


@dataclasses.dataclass(frozen=True)
class Support:
    """A box [lo, hi] per axis (displacement x − q), or a ball of radius `radius` when `ball`."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    ball: bool = False

    @classmethod
    def box(cls, half_width, dim: int) -> Support:
        half = _per_axis(half_width, dim)
        return cls(tuple(-h for h in half), half)

    @classmethod
    def sphere(cls, radius: float, dim: int) -> Support:
        return cls((-float(radius),) * dim, (float(radius),) * dim, ball=True)

    def __post_init__(self):
        if len(self.lo) != len(self.hi) or any(h <= lo for lo, h in zip(self.lo, self.hi)):
            raise UserError(f"a support needs lo < hi on every axis, got {self.lo} and {self.hi}")

    @property
    def dim(self) -> int:
        return len(self.lo)

    @property
    def volume(self) -> float:
        import math

        if self.ball:
            r, d = self.hi[0], self.dim
            return math.pi ** (d / 2) / math.gamma(d / 2 + 1) * r ** d
        return math.prod(h - lo for lo, h in zip(self.lo, self.hi))

    def contains(self, delta: torch.Tensor) -> torch.Tensor:
        if self.ball:
            return delta.square().sum(-1) <= (self.hi[0] * (1 + 1e-6)) ** 2
        lo, hi = _bounds(self, delta.device, delta.dtype)
        return ((delta >= lo) & (delta <= hi)).all(-1)


@functools.lru_cache(maxsize=256)
def _bounds(support: Support, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A box support's bounds widened by 1e-6 of its width, as tensors (made once per device, not per test)."""
    lo = torch.tensor(support.lo, dtype=dtype)
    hi = torch.tensor(support.hi, dtype=dtype)
    tol = 1e-6 * (hi - lo)
    return (lo - tol).to(device), (hi + tol).to(device)


def _per_axis(value, dim: int) -> tuple[float, ...]:
    values = (float(value),) * dim if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    if len(values) != dim:
        raise UserError(f"a support needs {dim} widths, got {len(values)}")
    return values


ALL_PAIRS = {"cpu": 2 ** 18, "cuda": 2 ** 22}
"""Up to this many (query, source) pairs, every pair is tested (one (m, n) mask) instead of hashing. On a GPU
the hashed search's few dozen small launches and host syncs cost more than testing 4 M pairs (32 MiB of
displacements at d = 2): a 32² point set redrawn each step is searched in one mask there."""


FULL_PAIRS = {"cuda": 2 ** 20}
"""Up to this many (query, source) pairs a neighbourhood on this device keeps every pair, those outside the
support with weight 0 (`layers.neighbourhood`), instead of finding the pairs inside: its shapes then follow
from the point counts alone, so no count is read back to the host and a CUDA graph can hold the search
(`learn.graphed`). A 32² set has 2^20 pairs; its sums over them are dense products, as a GPU takes for any
neighbourhood that fills 1/16 of its matrix (`_aggregate.DENSE_FILL`)."""


def keeps_all_pairs(queries: int, sources: int, device: torch.device) -> bool:
    """Whether a neighbourhood of these many queries and sources keeps every pair (`FULL_PAIRS`)."""
    return queries * sources <= FULL_PAIRS.get(device.type, 0)


def radius_pairs(queries: torch.Tensor, sources: torch.Tensor, support: Support, *,
                 chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(query index, source index) for every pair with sources[s] − queries[q] in `support`, by query."""
    d = sources.shape[1]
    if support.dim != d:
        raise UserError(f"a {support.dim}-D support cannot be used on {d}-D points")
    if queries.shape[0] * sources.shape[0] <= ALL_PAIRS.get(sources.device.type, ALL_PAIRS["cpu"]):
        # the same test as the hashed path's on the same displacements, so the same pairs
        qi, si = support.contains(sources[None] - queries[:, None]).nonzero(as_tuple=True)
        return qi, si
    lo = sources.new_tensor(support.lo, dtype=torch.float64)
    hi = sources.new_tensor(support.hi, dtype=torch.float64)
    # Cells as wide as the support (but few enough per axis that the int64 key cannot overflow).
    cell = torch.maximum(hi - lo, torch.full_like(lo, 4.0 / 2 ** (60 // d - 2)))
    origin = torch.minimum(sources.double().min(0).values, queries.double().min(0).values + lo) - cell
    src_cells = torch.floor((sources.double() - origin) / cell).long()
    extent = src_cells.max(0).values + 3
    strides = torch.ones(d, dtype=torch.long, device=sources.device)
    for a in range(d - 2, -1, -1):
        strides[a] = strides[a + 1] * extent[a + 1]
    keys = (src_cells * strides).sum(-1)
    keys, order = torch.sort(keys)
    offsets = torch.tensor(list(itertools.product((-1, 0, 1), repeat=d)), device=sources.device)

    out_q, out_s = [], []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        centre = torch.floor((q.double() + (lo + hi) / 2 - origin) / cell).long()  # (m, d)
        cells = centre[:, None, :] + offsets  # (m, 3^d, d)
        inside = ((cells >= 0) & (cells < extent)).all(-1)
        ckeys = (cells * strides).sum(-1)
        first = torch.searchsorted(keys, ckeys)
        last = torch.searchsorted(keys, ckeys, right=True)
        counts = torch.where(inside, last - first, torch.zeros_like(first)).reshape(-1)
        total = int(counts.sum())
        if total == 0:
            continue
        row = torch.repeat_interleave(torch.arange(counts.numel(), device=q.device), counts)
        pos = torch.arange(total, device=q.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        cand_s = order[first.reshape(-1)[row] + pos]
        cand_q = row // offsets.shape[0]
        keep = support.contains(sources[cand_s] - q[cand_q])
        out_q.append(cand_q[keep] + start)
        out_s.append(cand_s[keep])
    if not out_q:
        empty = torch.zeros(0, dtype=torch.long, device=sources.device)
        return empty, empty
    qi, si = torch.cat(out_q), torch.cat(out_s)
    return qi, si  # chunks and rows are in query order already


NEAREST_ENTRIES = 2 ** 22
"""`nearest` takes as many queries at a time as keep their (queries × sources) distances within this many
values (16 MiB in float32): one product for a small set, bounded memory for a large one."""

TREE_FROM = 2 ** 18
"""On the CPU, `nearest` asks a k-d tree (scipy's) once queries × sources reach this many pairs: its work grows as
queries · log(sources), where the distance matrix's grows as their product. `cell_volumes`' 16 probes per point
at 1,024 points took 52 ms through the matrix and 7.3 ms through the tree on 2 cores (`benchmarks/cell_volumes.py`).
A GPU keeps the matrix: it is fast there, and a CUDA graph can hold it."""


def nearest(queries: torch.Tensor, sources: torch.Tensor, k: int = 1, *, chunk: int | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances and indices (m, k) of the k nearest sources, nearest first: through a k-d tree on the CPU for
    large problems (`TREE_FROM`), else in chunks of queries (chunk × n memory). Exact ties may break either
    way."""
    k = min(k, sources.shape[0])
    if queries.device.type == "cpu" and queries.shape[0] * sources.shape[0] >= TREE_FROM and not queries.requires_grad \
            and not sources.requires_grad:
        return _tree_nearest(queries, sources, k)
    chunk = chunk or max(1, NEAREST_ENTRIES // max(1, sources.shape[0]))
    dists, index = [], []
    for start in range(0, queries.shape[0], chunk):
        dist = torch.cdist(queries[start:start + chunk].float(), sources.float())
        if k == 1:
            value, idx = dist.min(1, keepdim=True)
        else:
            value, idx = dist.topk(k, dim=1, largest=False)
        dists.append(value)
        index.append(idx)
    if len(dists) == 1:
        return dists[0], index[0]
    return torch.cat(dists), torch.cat(index)


def _tree_nearest(queries: torch.Tensor, sources: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.spatial import cKDTree  # scipy comes with scikit-image, a dependency

    tree = cKDTree(sources.detach().double().numpy())
    # one worker: a small part of a step, and two were not measured faster inside one on 2 cores
    dist, index = tree.query(queries.detach().double().numpy(), k=[*range(1, k + 1)], workers=1)
    return torch.from_numpy(dist).float(), torch.from_numpy(index).long()
