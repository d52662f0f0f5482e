"""Gather + segment-sum over neighbour pairs, with a backward that stores no per-pair activations.

acc[b, q, h, c] = Σ_{p: query(p)=q} basis[p, h] · x[b, source(p), c]

Autograd through `index_add` would keep a (pairs, h, b·c) tensor per layer; this function keeps only
`basis` (pairs, h) and recomputes per chunk of pairs in the backward pass. Internally values are laid out
points-first, (n, b·c), so every gather and scatter moves whole contiguous rows and the per-pair
contractions are sparse (CSR) or batched matrix products.
"""

from __future__ import annotations

import warnings

import torch

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def _chunk(h: int, bc: int, budget: int = 2 ** 23) -> int:
    return max(1, budget // max(1, h * bc))


def _csr(index: torch.Tensor, size: int) -> torch.Tensor:
    """Row pointers (size + 1,) of a sorted row index."""
    counts = torch.bincount(index, minlength=size)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _spmm(ptr, cols, values, shape, dense):
    return torch.sparse.mm(torch.sparse_csr_tensor(ptr, cols, values, shape, check_invariants=False), dense)


class _PairSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, basis, x, qi, si, m):
        b, n, c = x.shape
        h = basis.shape[1]
        rows = x.permute(1, 0, 2).reshape(n, b * c).contiguous()  # (n, bc)
        ptr = _csr(qi, m)
        # One sparse (m × n) matrix per basis function, all with the pair structure: S_h @ rows.
        acc = torch.stack([_spmm(ptr, si, basis[:, k].contiguous(), (m, n), rows) for k in range(h)], 1)
        ctx.save_for_backward(basis, rows, qi, si)
        ctx.shape = (b, n, c)
        return acc.reshape(m, h, b, c).permute(2, 0, 1, 3)

    @staticmethod
    def backward(ctx, grad):
        basis, rows, qi, si = ctx.saved_tensors
        b, n, c = ctx.shape
        m, h = grad.shape[1], grad.shape[2]
        g_rows = grad.permute(1, 2, 0, 3).reshape(m, h, b * c)
        grad_basis = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_basis = torch.empty_like(basis)
            step = _chunk(h, b * c)
            for start in range(0, basis.shape[0], step):
                sl = slice(start, start + step)
                grad_basis[sl] = torch.bmm(g_rows[qi[sl]], rows[si[sl], :, None])[:, :, 0]
        if ctx.needs_input_grad[1]:  # Σ_h S_hᵀ g_h, with the pairs re-sorted by source
            order = torch.argsort(si, stable=True)
            ptr, cols = _csr(si[order], n), qi[order]
            grad_rows = sum(_spmm(ptr, cols, basis[order, k].contiguous(), (n, m), g_rows[:, k].contiguous())
                            for k in range(h))
            grad_x = grad_rows.reshape(n, b, c).permute(1, 0, 2)
        return grad_basis, grad_x, None, None, None


def pair_sum(basis: torch.Tensor, x: torch.Tensor, qi: torch.Tensor, si: torch.Tensor, m: int) -> torch.Tensor:
    """basis (p, h), x (b, n, c), pair indices (p,) → (b, m, h, c)."""
    return _PairSum.apply(basis, x, qi, si, m)
