"""Gather + segment-sum over neighbour pairs, with a backward that stores no per-pair activations.

acc[q, h, b, c] = Σ_{p: query(p)=q} basis[p, h] · x[b, source(p), c]

Every basis function h gives one sparse (queries × sources) matrix with the pair pattern; the h matrices are
stacked row-interleaved into one (queries·h × sources) CSR matrix, so the sum is a single CSR × dense product
on values laid out points-first (n, b·c) whose result is already laid out (m, h, b, c). The backward pass
uses the transposed product and, for the basis gradient, a sampled dense-dense product on the same pattern.
Nothing of size (pairs, h, b·c) is ever built; the stacked pattern (pairs·h indices) is kept for the backward.
"""

from __future__ import annotations

import warnings

import torch

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def _csr(index: torch.Tensor, size: int) -> torch.Tensor:
    """Row pointers (size + 1,) of a sorted row index."""
    counts = torch.bincount(index, minlength=size)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def _spmm(ptr, cols, values, shape, dense):
    return torch.sparse.mm(torch.sparse_csr_tensor(ptr, cols, values, shape, check_invariants=False), dense)


def _stacked(basis: torch.Tensor, qi: torch.Tensor, si: torch.Tensor, m: int):
    """The h sparse (m × n) matrices S_k stacked row-interleaved into one (m·h × n) CSR matrix: row q·h + k
    holds query q's pairs with values basis[:, k]. Returns (ptr, cols, values, where) with `where` (p, h) the
    position of each (pair, k) among the values."""
    p, h = basis.shape
    counts = torch.bincount(qi, minlength=m)
    start = torch.cumsum(counts, 0) - counts  # first pair of each query
    local = torch.arange(p, device=qi.device) - start[qi]
    where = (start[qi] * h + local)[:, None] + torch.arange(h, device=qi.device) * counts[qi][:, None]  # (p, h)
    ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts.repeat_interleave(h), 0)])
    cols = torch.empty(p * h, dtype=si.dtype, device=si.device)
    cols[where.reshape(-1)] = si.repeat_interleave(h)
    values = torch.empty(p * h, dtype=basis.dtype, device=basis.device)
    values[where.reshape(-1)] = basis.reshape(-1)
    return ptr, cols, values, where


class _PairSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, basis, x, qi, si, m):
        b, n, c = x.shape
        h = basis.shape[1]
        rows = x.permute(1, 0, 2).reshape(n, b * c).contiguous()  # (n, bc)
        # One product with the h basis matrices stacked: (m·h × n) @ (n, bc) is acc laid out (m, h, b, c).
        ptr, cols, values, where = _stacked(basis, qi, si, m)
        acc = _spmm(ptr, cols, values, (m * h, n), rows)
        ctx.save_for_backward(basis, rows, qi, si, ptr, cols, where)
        ctx.shape = (b, n, c)
        return acc.reshape(m, h, b, c)

    @staticmethod
    def backward(ctx, grad):
        basis, rows, qi, si, ptr, cols, where = ctx.saved_tensors
        b, n, c = ctx.shape
        m, h = grad.shape[0], grad.shape[1]
        g_rows = grad.reshape(m * h, b * c).contiguous()
        grad_basis = grad_x = None
        if ctx.needs_input_grad[0]:
            # grad_basis[p, k] = <g[q_p, k], rows[s_p]>: a sampled dense-dense product on the stacked pattern
            pattern = torch.sparse_csr_tensor(ptr, cols, basis.new_zeros(len(cols)), (m * h, n), check_invariants=False)
            sampled = torch.sparse.sampled_addmm(pattern, g_rows, rows.t(), beta=0.0).values()
            grad_basis = sampled[where.reshape(-1)].view_as(basis)
        if ctx.needs_input_grad[1]:  # Sᵀ g with the pairs re-sorted by source; pair p gives columns q_p·h + k
            order = torch.argsort(si, stable=True)
            ptr_t = _csr(si[order], n) * h
            cols_t = (qi[order, None] * h + torch.arange(h, device=qi.device)).reshape(-1)
            grad_rows = _spmm(ptr_t, cols_t, basis[order].reshape(-1).contiguous(), (n, m * h), g_rows)
            grad_x = grad_rows.reshape(n, b, c).permute(1, 0, 2)
        return grad_basis, grad_x, None, None, None


def pair_sum(basis: torch.Tensor, x: torch.Tensor, qi: torch.Tensor, si: torch.Tensor, m: int) -> torch.Tensor:
    """basis (p, h), x (b, n, c), pair indices (p,) sorted by query → (m, h, b, c)."""
    return _PairSum.apply(basis, x, qi, si, m)
