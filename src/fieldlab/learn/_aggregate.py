"""Gather + segment-sum over neighbour pairs, with a backward that stores no per-pair activations.

acc[q, h, b, c] = Σ_{p: query(p)=q} basis[p, h] · x[b, source(p), c]

or, on values laid out points-first as rows (n, k) in any order of (batch, channel), acc[q, h, :] =
Σ_p basis[p, h] · rows[source(p)] (`PairPlan.sum_rows`: a layer picks the layout its next product wants).

Every basis function h gives one sparse (queries × sources) matrix with the pair pattern; the h matrices are
stacked row-interleaved into one (queries·h × sources) CSR matrix, so the sum is a single CSR × dense product
on values laid out points-first (n, b·c) whose result is already laid out (m, h, b, c). The backward pass
uses the transposed product and, for the basis gradient, a sampled dense-dense product on the same pattern.
Nothing of size (pairs, h, b·c) is ever built; the stacked pattern (pairs·h indices) is kept for the backward.

`PairPlan` is the fast path a layer takes: built once per pair list (once per point set, reused across the
batch, the layers that share a support, and the steps while the set is fixed), it keeps the index layout
of either product and picks one. When the pairs fill a good part of the (queries × sources) matrix (small
sets: 16² points and a support of 32 neighbours fill a third of it), the basis is scattered into that dense
matrix and the sum is one dense matmul, whose backward is two more: a sparse product reads h rows of x per
stored value and is bound by memory, a dense one is not. On a CPU, a plan that knows its points' coordinates
cuts the matrix into blocks of nearby points (Z-order) and multiplies only the blocks that hold pairs, side by
side per block of queries (`_Blocks`): at 32² points DI-Net's matrices are 2-10% pairs, its blocks 15-40%.
"""

from __future__ import annotations

import functools
import warnings

import torch

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def _csr(index: torch.Tensor, size: int) -> torch.Tensor:
    """Row pointers (size + 1,) of a sorted row index."""
    counts = torch.bincount(index, minlength=size)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _spmm(ptr, cols, values, shape, dense):
    matrix = torch.sparse_csr_tensor(ptr, cols, values, shape, check_invariants=False)
    if dense.device.type == "cpu" and dense.dtype in (torch.float32, torch.float64):
        # MKL's product written straight into a fresh output: `sparse.mm` zero-fills its output and copies the
        # product into it (2 of the 9 ms of a 840k-value product of 64 columns on 2 cores)
        out = dense.new_empty(shape[0], dense.shape[1])
        return torch.addmm(out, matrix, dense, beta=0, out=out)
    return torch.sparse.mm(matrix, dense)


SAMPLED_MIN_COLUMNS = 8
"""torch's CPU sampled product takes a slow path for 2 to 7 columns, about 4 ms a column at 1.74 M values on
2 cores (26 ms at 7 columns), where 8 columns take 2 ms and 1 column 1.4. Such products (a batch of 2 to 7 fields
in a depthwise layer's kernel gradient) are padded with zero columns to 8: the same dot products
(BENCHMARKS.md, "Small batches")."""


def _sampled(ptr: torch.Tensor, cols: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The values of a (r, k) @ b (c, k)ᵀ at the entries of the CSR pattern (ptr, cols), in its order."""
    pattern = torch.sparse_csr_tensor(ptr, cols, a.new_zeros(len(cols)), (a.shape[0], b.shape[0]),
                                      check_invariants=False)
    k = a.shape[1]
    if a.device.type == "cpu" and 1 < k < SAMPLED_MIN_COLUMNS:
        a = torch.nn.functional.pad(a, (0, SAMPLED_MIN_COLUMNS - k))
        b = torch.nn.functional.pad(b, (0, SAMPLED_MIN_COLUMNS - k))
    return torch.sparse.sampled_addmm(pattern, a, b.t(), beta=0.0).values()


def _index_dtype(device: torch.device, largest: int) -> torch.dtype:
    """The dtype of a CSR index whose values stay below `largest` (known from the matrix's sizes, so no pass
    over it): int32 on the CPU where that fits, as MKL reads int32 and torch converts an int64 index at every
    product (0.8 ms for 930k columns on 2 cores); int64 elsewhere."""
    return torch.int32 if device.type == "cpu" and largest < 2 ** 31 else torch.int64


def _stacked(qi: torch.Tensor, m: int, h: int):
    """The pattern of h sparse (m × n) matrices S_k stacked row-interleaved into one (m·h × n) CSR matrix: row
    q·h + k holds query q's pairs with values basis[:, k]. Returns (ptr, where) with `where` (p, h) the position
    of each (pair, k) among the values."""
    p = len(qi)
    counts = torch.bincount(qi, minlength=m)
    start = torch.cumsum(counts, 0) - counts  # first pair of each query
    local = torch.arange(p, device=qi.device) - start[qi]
    where = (start[qi] * h + local)[:, None] + torch.arange(h, device=qi.device) * counts[qi][:, None]  # (p, h)
    ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts.repeat_interleave(h), 0)])
    return ptr, where


def _transposed(qi: torch.Tensor, si: torch.Tensor, n: int, h: int):
    """(order, ptr, cols) of Sᵀ: the pairs re-sorted by source; pair p gives columns q_p·h + k."""
    order = torch.argsort(si, stable=True)
    ptr_t = _csr(si[order], n) * h
    cols_t = (qi[order, None] * h + torch.arange(h, device=qi.device)).reshape(-1)
    return order, ptr_t, cols_t


class _Layout:
    """The CSR pattern of a pair list's sparse matrix and of its transpose (for the backward); a subclass says
    where each value of the pairs goes in either (`values`, `pair_values`, `transposed_values`)."""

    def __init__(self, ptr, cols, ptr_t, cols_t):
        self.ptr, self.cols, self.ptr_t, self.cols_t = ptr, cols, ptr_t, cols_t

    def values(self, basis: torch.Tensor) -> torch.Tensor:
        """The pairs' values → the matrix's values in CSR order."""
        raise NotImplementedError

    def pair_values(self, values: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """Values in CSR order → laid out as `basis` (the inverse of `values`)."""
        raise NotImplementedError

    def transposed_values(self, basis: torch.Tensor) -> torch.Tensor:
        """The pairs' values → the transposed matrix's values in its CSR order."""
        raise NotImplementedError


class _Stacked(_Layout):
    """The (m·h × n) matrix of a (p, h) basis over pairs sorted by query (`_stacked`), with `where` each (pair,
    k) value's place among its values and `order` the pairs by source (its transpose's order)."""

    def __init__(self, qi: torch.Tensor, si: torch.Tensor, m: int, n: int, h: int):
        ptr, self.where = _stacked(qi, m, h)
        cols = torch.empty(len(qi) * h, dtype=si.dtype, device=si.device)
        cols[self.where.reshape(-1)] = si.repeat_interleave(h)
        self.order, ptr_t, cols_t = _transposed(qi, si, n, h)
        dtype = _index_dtype(qi.device, len(qi) * h + max(m * h, n))  # pointers ≤ p·h, columns < n or m·h
        super().__init__(ptr.to(dtype), cols.to(dtype), ptr_t.to(dtype), cols_t.to(dtype))

    def values(self, basis: torch.Tensor) -> torch.Tensor:
        return basis.new_empty(len(self.cols)).index_copy_(0, self.where.reshape(-1), basis.reshape(-1))

    def pair_values(self, values: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        return values[self.where.reshape(-1)].view_as(basis)

    def transposed_values(self, basis: torch.Tensor) -> torch.Tensor:
        return basis[self.order].reshape(-1).contiguous()


class _BlockDiagonal(_Layout):
    """The (m·c × n·c) pattern with one (m × n) block of the pairs per channel: value c·p + j (channel c, pair j
    of the query-sorted pairs) at row c·m + q_j, column c·n + s_j. Built from one block's layout by offsets, with
    no sort, and (on the CPU, where they fit) in int32 from the start; a (c, p) kernel is its values as it is."""

    def __init__(self, qi: torch.Tensor, si: torch.Tensor, m: int, n: int, c: int):
        one, p = _Stacked(qi, si, m, n, 1), len(qi)
        dtype = _index_dtype(qi.device, c * (max(m, n, p) + 1))
        channel = torch.arange(c, device=qi.device, dtype=dtype)[:, None]
        zero = torch.zeros(1, device=qi.device, dtype=dtype)

        def offset(ptr):  # the blocks' row pointers one after another
            return torch.cat([zero, (channel * p + ptr[1:].to(dtype)).reshape(-1)])

        self.channels, self.one_order = c, one.order
        super().__init__(offset(one.ptr), (channel * n + one.cols.to(dtype)).reshape(-1), offset(one.ptr_t),
                         (channel * m + one.cols_t.to(dtype)).reshape(-1))

    # pairs sorted by query (as `_stacked` reads them) are in CSR order already: one block's `where` is 0..p-1
    def values(self, basis: torch.Tensor) -> torch.Tensor:
        return basis.reshape(-1)

    def pair_values(self, values: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        return values.view_as(basis)

    def transposed_values(self, basis: torch.Tensor) -> torch.Tensor:
        return basis.view(self.channels, -1).index_select(1, self.one_order).reshape(-1)  # 1.6× indexing's speed


class _PairSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, basis, rows, layout: _Layout, m: int, transposed: torch.Tensor | None = None):
        """`transposed`: the transposed matrix's values (`layout.transposed_values(basis)`) where the caller
        makes them more cheaply than that gather does; they carry no gradient (basis's is computed in full)."""
        n, k = rows.shape
        h = basis.shape[1]
        rows = rows.contiguous()
        # One product with the h basis matrices stacked: (m·h × n) @ (n, bc) is acc laid out (m, h, b, c).
        acc = _spmm(layout.ptr, layout.cols, layout.values(basis), (m * h, n), rows)
        ctx.save_for_backward(basis, rows)
        ctx.layout, ctx.transposed = layout, transposed
        return acc.reshape(m, h, k)

    @staticmethod
    def backward(ctx, grad):
        basis, rows = ctx.saved_tensors
        layout = ctx.layout
        n, k = rows.shape
        m, h = grad.shape[0], grad.shape[1]
        g_rows = grad.reshape(m * h, k).contiguous()
        grad_basis = grad_x = None
        if ctx.needs_input_grad[0]:
            # grad_basis[p, k] = <g[q_p, k], rows[s_p]>: a sampled dense-dense product on the stacked pattern
            grad_basis = layout.pair_values(_sampled(layout.ptr, layout.cols, g_rows, rows), basis)
        if ctx.needs_input_grad[1]:
            values = layout.transposed_values(basis) if ctx.transposed is None else ctx.transposed.reshape(-1)
            grad_x = _spmm(layout.ptr_t, layout.cols_t, values, (n, m * h), g_rows)
        return grad_basis, grad_x, None, None, None


def pair_sum(basis: torch.Tensor, x: torch.Tensor, qi: torch.Tensor, si: torch.Tensor, m: int) -> torch.Tensor:
    """basis (p, h), x (b, n, c), pair indices (p,) sorted by query → (m, h, b, c). The plain path: every
    call rebuilds the sparse pattern (a layer reuses one through `PairPlan`)."""
    b, n, c = x.shape
    rows = x.permute(1, 0, 2).reshape(n, b * c)
    return _PairSum.apply(basis, rows, _Stacked(qi, si, m, n, basis.shape[1]), m, None).view(m, -1, b, c)


DENSE_FILL = 1 / 16
"""The dense product is taken when the pairs fill at least this share of the (queries × sources) matrix
(dense work is 1/fill times the pairs' work, at well over that many times the speed on CPU and GPU)."""
DENSE_ENTRIES = {"cpu": 2 ** 23, "cuda": 2 ** 25}
"""...and the dense (queries·h × sources) matrix holds at most this many values (32 MiB in float32 on a CPU,
128 MiB on a GPU: a 32² set's every pair at up to 32 basis functions, `_neighbors.FULL_PAIRS`)."""


DENSE_CHANNEL_FILL = 1 / 4
"""`PairPlan.sum_channels` takes the dense product where the pairs fill at least this share of each channel's
matrix. Its products are small (one (queries × sources) @ (sources × batch) per channel) and their dense
matrices are written per step: on a CPU the CSR product was 1.6× faster at a tenth full, even at a third, and
the dense one 2.4× faster at 83% (fill and backward included; `sum_channels`' docstring)."""


def _dense_entries(device: torch.device) -> int:
    return DENSE_ENTRIES.get(device.type, DENSE_ENTRIES["cpu"])


BLOCKS = True
"""Whether plans sum block by block where they can (`_Blocks`); False: the dense or sparse product
(benchmarks/dinet_speed.py --no-blocks compares the two in one run)."""
BLOCK_DEVICES = ("cpu",)
"""Devices that take the block sum: measured faster on a CPU (DI-Net at 32² points, BENCHMARKS.md), not yet
timed on a GPU, where a step is bound by launches and the plan's build adds two host syncs per point set."""
BLOCK = 8
"""Points per block of the block-dense sum (`_Blocks`). DI-Net at 32² points (CPU, one thread) ran 1.24× (grid)
and 1.13× (RQMC) the dense sum's steps with blocks of 8, 1.18× and 1.06× with blocks of 16 (BENCHMARKS.md)."""
BLOCK_GAIN = 1.5
"""The block-dense sum is taken where it multiplies at most 1/BLOCK_GAIN of the dense matrix's cells..."""
BLOCK_FILL = 1 / 16
"""...and its blocks hold at least this share of pairs (as DENSE_FILL for the whole matrix)."""


def morton_order(coords: torch.Tensor, bits: int = 10) -> torch.Tensor:
    """A permutation of points (n, d) along a Z-order curve over their bounding box (`bits` per axis, d ≤ 6):
    points close in the order are close in space, so consecutive points make compact blocks."""
    n, d = coords.shape
    low, high = coords.min(0).values, coords.max(0).values
    cells = ((coords - low) / (high - low).clamp_min(1e-12) * (2 ** bits - 1)).round().long()
    code = torch.zeros(n, dtype=torch.long, device=coords.device)
    for bit in range(bits):
        for axis in range(d):
            code |= ((cells[:, axis] >> bit) & 1) << (bit * d + axis)
    return torch.argsort(code, stable=True)


class _Blocks:
    """The (queries × sources) matrix cut into BLOCK × BLOCK blocks of points in Z-order, keeping only the
    blocks that hold pairs. Each block of queries gathers its kept blocks side by side (padded to the most any
    block of queries has), so the sum is one batched product (query blocks, BLOCK·h, slots·BLOCK) @ (query
    blocks, slots·BLOCK, k) whose output is laid out as the dense product's. Pairs fill a support's
    neighbourhood of a compact block of queries, so far fewer cells are multiplied than in the whole matrix."""

    def __init__(self, qi: torch.Tensor, si: torch.Tensor, m: int, n: int, query_order: torch.Tensor,
                 source_order: torch.Tensor, block: int = BLOCK):
        self.block, device = block, qi.device
        q_rank = torch.empty_like(query_order).scatter_(0, query_order, torch.arange(m, device=device))
        s_rank = torch.empty_like(source_order).scatter_(0, source_order, torch.arange(n, device=device))
        self.q_blocks, self.s_blocks = -(-m // block), -(-n // block)
        q_block, s_block = q_rank[qi] // block, s_rank[si] // block
        kept, pair_kept = torch.unique(q_block * self.s_blocks + s_block, return_inverse=True)  # sorted by query block
        kept_q = kept // self.s_blocks
        counts = torch.bincount(kept_q, minlength=self.q_blocks)
        self.slots = int(counts.max())
        slot = torch.arange(len(kept), device=device) - (torch.cumsum(counts, 0) - counts)[kept_q]
        # the source block in each (query block, slot); the padding slots read block s_blocks, all zeros
        self.gather = torch.full((self.q_blocks, self.slots), self.s_blocks, dtype=torch.long, device=device)
        self.gather[kept_q, slot] = kept % self.s_blocks
        self.pair_qblock, self.pair_slot = q_block, slot[pair_kept]
        self.local_q, self.local_s = q_rank[qi] % block, s_rank[si] % block
        # each source's row in the padded Z-ordered layout (padding reads row n, a row of zeros)
        self.source_rows = torch.full(((self.s_blocks + 1) * block,), n, dtype=torch.long, device=device)
        self.source_rows[s_rank] = torch.arange(n, device=device)
        self.q_rank = q_rank
        self._flat: dict[int, torch.Tensor] = {}

    @property
    def cells(self) -> int:
        return self.q_blocks * self.block * self.slots * self.block

    def sum_rows(self, basis: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """basis (p, h), rows (n, k) → (m, h, k)."""
        h, k, t, width = basis.shape[1], rows.shape[1], self.block, self.slots * self.block
        if h not in self._flat:  # value (p, j): row local_q·h + j, column slot·t + local_s of its query block
            j = torch.arange(h, device=basis.device)
            self._flat[h] = (((self.pair_qblock[:, None] * (t * h) + self.local_q[:, None] * h + j) * width)
                             + (self.pair_slot * t + self.local_s)[:, None]).reshape(-1)
        matrix = basis.new_zeros(self.q_blocks * t * h * width).scatter(0, self._flat[h], basis.reshape(-1))
        padded = torch.cat([rows, rows.new_zeros(1, k)]).index_select(0, self.source_rows)
        gathered = padded.view(self.s_blocks + 1, t, k).index_select(0, self.gather.reshape(-1))
        out = torch.bmm(matrix.view(self.q_blocks, t * h, width), gathered.view(self.q_blocks, width, k))
        return out.view(self.q_blocks * t, h, k).index_select(0, self.q_rank)


class PairPlan:
    """The sum over one (query, source) pair list, with its index layouts built once and reused.

    `plan.sum(basis, x)` equals `pair_sum(basis, x, qi, si, m)`: basis (p, h), x (b, n, c) → (m, h, b, c).
    Given the points' coordinates, a plan whose pairs gather in blocks of nearby points sums block by block
    (`_Blocks`) where that multiplies fewer cells than the dense matrix.
    """

    def __init__(self, qi: torch.Tensor, si: torch.Tensor, m: int, n: int, *,
                 query_coords: torch.Tensor | None = None, source_coords: torch.Tensor | None = None,
                 full: bool = False):
        self.qi, self.si, self.m, self.n = qi, si, m, n
        self.full = full
        """Whether the pairs are every (query, source) pair in query-major order (`layers._all_pairs`): the
        dense matrix is then the basis itself, transposed per query, with no scatter."""
        self._layouts: dict[int, _Stacked] = {}
        self._flat: dict[int, torch.Tensor] = {}
        self._channels: dict[tuple, torch.Tensor | _Layout] = {}
        self._coords = (query_coords, source_coords)

    @functools.cached_property
    def blocks(self) -> _Blocks | None:
        """The block-by-block layout (`_Blocks`) where it multiplies fewer cells than the dense matrix, else
        None; built at the first use, as only a full kernel's sum (`sum_rows`) reads it."""
        (query_coords, source_coords), qi, si, m, n = self._coords, self.qi, self.si, self.m, self.n
        if (self.full or query_coords is None or source_coords is None or not len(qi) or min(m, n) <= BLOCK
                or qi.device.type not in BLOCK_DEVICES):
            return None
        query_order = morton_order(query_coords)
        source_order = query_order if source_coords is query_coords else morton_order(source_coords)
        blocks = _Blocks(qi, si, m, n, query_order, source_order)
        if blocks.cells * BLOCK_GAIN > m * n or len(qi) < BLOCK_FILL * blocks.cells:
            return None
        return blocks

    def dense(self, h: int) -> bool:
        cells = self.m * self.n
        return (self.full or len(self.qi) >= DENSE_FILL * cells) and cells * h <= _dense_entries(self.qi.device)

    def sum(self, basis: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return self.sum_rows(basis, x.permute(1, 0, 2).reshape(n, b * c)).view(self.m, -1, b, c)

    def sum_rows(self, basis: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """basis (p, h), rows (n, k) → (m, h, k)."""
        h = basis.shape[1]
        if BLOCKS and self.blocks is not None and self.blocks.cells * h <= _dense_entries(rows.device):
            return self.blocks.sum_rows(basis, rows)
        if self.dense(h):
            return self._dense_sum(basis, rows)
        if h not in self._layouts:
            self._layouts[h] = _Stacked(self.qi, self.si, self.m, self.n, h)
        return _PairSum.apply(basis, rows, self._layouts[h], self.m, None)

    def _dense_sum(self, basis: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        m, h, n = self.m, basis.shape[1], self.n
        if self.full:  # value (p, k) of pair p = q·n + s lands at row q·h + k, column s
            return (basis.view(m, n, h).transpose(1, 2).reshape(m * h, n) @ rows).view(m, h, -1)
        if h not in self._flat:  # where value (p, k) lands in the flattened (m·h, n) matrix: row q_p·h + k
            k = torch.arange(h, device=self.qi.device)
            self._flat[h] = ((self.qi[:, None] * h + k) * n + self.si[:, None]).reshape(-1)
        # scatter (not index_put) so the backward is a gather of the matrix's gradient at the pairs
        matrix = basis.new_zeros(m * h * n).scatter(0, self._flat[h], basis.reshape(-1)).view(m * h, n)
        return (matrix @ rows).view(m, h, -1)

    def sum_channels(self, kernel: torch.Tensor, x: torch.Tensor,
                     factors: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """kernel (c, p), x (c, n, b) → (c, m, b): out[c, q, b] = Σ_p kernel[c, p] · x[c, s_p, b], a depthwise
        sum whose kernel the batch shares, channels first (each channel's matrices contiguous). Its work is
        pairs·c·b where a (p, h) basis's `sum_rows` is pairs·h·b·c: a layer that contracts the basis with its
        weights first saves a factor h. Dense, the channels' (queries × sources) matrices are one batched
        product; sparse, one CSR product over a block-diagonal (m·c × n·c) matrix, a block per channel.

        `factors` (A (c, h), φ (p, h)) with kernel = A φᵀ: the sparse backward's transposed product reads the
        kernel with its pairs in source order, which the same small product makes from φ's rows in that order
        (1-2 ms on 2 cores) where gathering the (c, p) values took 6-12 ms at DI-Net's 32² sizes."""
        c, n, b = x.shape
        m = self.m
        if self.full:  # pair q·n + s is already at its place in the (m, n) matrix
            return torch.bmm(kernel.view(c, m, n), x)
        if len(self.qi) >= DENSE_CHANNEL_FILL * m * n and m * n * c <= _dense_entries(x.device):
            key = ("dense", c)
            if key not in self._channels:  # value (c, p) lands at c·m·n + q_p·n + s_p
                cells = self.qi * n + self.si
                self._channels[key] = (torch.arange(c, device=cells.device)[:, None] * (m * n) + cells).reshape(-1)
            # in place into fresh zeros (no copy of them); the backward is a gather of the matrix's gradient
            matrix = torch.zeros(c * m * n, dtype=kernel.dtype, device=kernel.device)
            matrix.scatter_(0, self._channels[key], kernel.reshape(-1))
            return torch.bmm(matrix.view(c, m, n), x)
        key = ("sparse", c)
        if key not in self._channels:  # value (c, p) at row c·m + q_p, column c·n + s_p: sorted by row as it is
            self._channels[key] = _BlockDiagonal(self.qi, self.si, m, n, c)
        layout, by_source = self._channels[key], None
        if factors is not None and kernel.requires_grad and torch.is_grad_enabled():
            with torch.no_grad():
                by_source = factors[0] @ factors[1].index_select(0, layout.one_order).t()
        out = _PairSum.apply(kernel.reshape(-1, 1), x.reshape(c * n, b), layout, m * c, by_source)
        return out.view(c, m, b)
