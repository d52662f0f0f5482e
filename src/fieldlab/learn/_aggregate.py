"""Gather + segment-sum over neighbour pairs, with a backward that stores no per-pair activations.

acc[q, h, b, c] = Σ_{p: query(p)=q} basis[p, h] · x[b, source(p), c]

Every basis function h gives one sparse (queries × sources) matrix with the pair pattern, so the sum is
h CSR × dense products on values laid out points-first (n, b·c); the backward pass uses the transposed
products and, for the basis gradient, a sampled dense-dense product on the same pattern. Nothing of size
(pairs, h, b·c) is ever built, and only `basis` (pairs, h) is stored for the backward pass.
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


class _PairSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, basis, x, qi, si, m):
        b, n, c = x.shape
        h = basis.shape[1]
        rows = x.permute(1, 0, 2).reshape(n, b * c).contiguous()  # (n, bc)
        ptr = _csr(qi, m)
        # One sparse (m × n) matrix per basis function, all with the pair structure: S_h @ rows.
        acc = torch.stack([_spmm(ptr, si, basis[:, k].contiguous(), (m, n), rows) for k in range(h)], 1)
        ctx.save_for_backward(basis, rows, qi, si, ptr)
        ctx.shape = (b, n, c)
        return acc.reshape(m, h, b, c)

    @staticmethod
    def backward(ctx, grad):
        basis, rows, qi, si, ptr = ctx.saved_tensors
        b, n, c = ctx.shape
        m, h = grad.shape[0], grad.shape[1]
        g_rows = grad.reshape(m, h, b * c)
        grad_basis = grad_x = None
        if ctx.needs_input_grad[0]:
            # grad_basis[p, h] = <g[q_p, h], rows[s_p]>: a sampled dense-dense product on the pair pattern
            pattern = torch.sparse_csr_tensor(ptr, si, basis.new_zeros(len(si)), (m, n), check_invariants=False)
            rows_t = rows.t().contiguous()
            grad_basis = torch.stack([torch.sparse.sampled_addmm(pattern, g_rows[:, k].contiguous(), rows_t,
                                                                 beta=0.0).values() for k in range(h)], 1)
        if ctx.needs_input_grad[1]:  # Σ_h S_hᵀ g_h, with the pairs re-sorted by source
            order = torch.argsort(si, stable=True)
            ptr_t, cols = _csr(si[order], n), qi[order]
            grad_rows = sum(_spmm(ptr_t, cols, basis[order, k].contiguous(), (n, m), g_rows[:, k].contiguous())
                            for k in range(h))
            grad_x = grad_rows.reshape(n, b, c).permute(1, 0, 2)
        return grad_basis, grad_x, None, None, None


def pair_sum(basis: torch.Tensor, x: torch.Tensor, qi: torch.Tensor, si: torch.Tensor, m: int) -> torch.Tensor:
    """basis (p, h), x (b, n, c), pair indices (p,) sorted by query → (m, h, b, c)."""
    return _PairSum.apply(basis, x, qi, si, m)
