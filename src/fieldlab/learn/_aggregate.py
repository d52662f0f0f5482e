"""Gather + segment-sum over neighbour pairs, with a backward that stores no per-pair activations.

acc[b, q, h, c] = Σ_{p: query(p)=q} basis[p, h] · x[b, source(p), c]

Autograd through `index_add` would keep a (b, pairs, h, c) tensor per layer; this function keeps only
`basis` (pairs, h) and recomputes per chunk of pairs in the backward pass.
"""

from __future__ import annotations

import torch


def _chunk(b: int, h: int, c: int, budget: int = 2 ** 24) -> int:
    return max(1, budget // max(1, b * h * c))


class _PairSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, basis, x, qi, si, m):
        b, _, c = x.shape
        h = basis.shape[1]
        acc = x.new_zeros(b, m, h, c)
        step = _chunk(b, h, c)
        for start in range(0, basis.shape[0], step):
            sl = slice(start, start + step)
            acc.index_add_(1, qi[sl], basis[sl, :, None] * x[:, si[sl], None, :])
        ctx.save_for_backward(basis, x, qi, si)
        return acc

    @staticmethod
    def backward(ctx, grad):
        basis, x, qi, si = ctx.saved_tensors
        b, _, c = x.shape
        h = basis.shape[1]
        grad_basis = torch.zeros_like(basis) if ctx.needs_input_grad[0] else None
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[1] else None
        step = _chunk(b, h, c)
        for start in range(0, basis.shape[0], step):
            sl = slice(start, start + step)
            g = grad[:, qi[sl]]  # (b, p, h, c)
            if grad_basis is not None:
                grad_basis[sl] = torch.einsum("bphc,bpc->ph", g, x[:, si[sl]])
            if grad_x is not None:
                grad_x.index_add_(1, si[sl], torch.einsum("bphc,ph->bpc", g, basis[sl]))
        return grad_basis, grad_x, None, None, None


def pair_sum(basis: torch.Tensor, x: torch.Tensor, qi: torch.Tensor, si: torch.Tensor, m: int) -> torch.Tensor:
    """basis (p, h), x (b, n, c), pair indices (p,) → (b, m, h, c)."""
    return _PairSum.apply(basis, x, qi, si, m)
