"""The hash encoding's rows and weights, built per corner from (points, levels) slices, against the
definition written out on (points, levels, corners, dims) tensors, as the encoding computed them before."""

from __future__ import annotations

import pytest
import torch

from fieldlab.encodings import HashGridEncoding
from fieldlab.encodings.hashgrid import _PRIMES


def _by_definition(encoding: HashGridEncoding, x: torch.Tensor) -> torch.Tensor:
    d = encoding.in_dim
    x = ((x + 1) / 2).clamp(0, 1)
    pos = x[:, None, :] * encoding.resolutions[:, None]
    base = pos.floor().minimum(encoding.resolutions[:, None] - 1)
    frac = pos - base
    corners = torch.tensor([[(c >> i) & 1 for i in range(d)] for c in range(2 ** d)])
    vertex = base.long()[:, :, None, :] + corners  # (n, l, k, d)
    strides = torch.stack([(encoding.resolutions.long() + 1) ** i for i in range(d)], -1)  # (l, d)
    dense = (vertex * strides[:, None, :]).sum(-1)
    hashed = vertex * torch.tensor(_PRIMES[:d])
    index = hashed[..., 0]
    for i in range(1, d):
        index = index ^ hashed[..., i]
    rows = torch.where(encoding.hashed[:, None], index % encoding.sizes[:, None], dense) + encoding.offsets[:, None]
    weights = torch.where(corners.bool(), frac[:, :, None, :], 1 - frac[:, :, None, :]).prod(-1)
    features = encoding.table[rows]  # (n, l, k, f)
    return (features * weights[..., None]).sum(2).reshape(len(x), -1)


@pytest.mark.parametrize("in_dim,table_size,base,top", [
    (1, 8, 2, 64), (2, 64, 2, 64), (3, 200, 2, 32), (2, 2 ** 15, 2, 64),  # dense then hashed; dense only
    (2, 64, 16, 4),  # a base above the maximum: resolutions fall, the hashed levels come first
])
def test_rows_and_weights_follow_the_definition(in_dim, table_size, base, top):
    torch.manual_seed(0)
    encoding = HashGridEncoding(in_dim=in_dim, num_levels=6, features_per_level=2, table_size=table_size,
                                base_resolution=base, max_resolution=top)
    with torch.no_grad():
        encoding.table.uniform_(-1, 1)
    x = torch.rand(500, in_dim) * 2.4 - 1.2
    x[0], x[1] = -1.0, 1.0
    out, expected = encoding(x), _by_definition(encoding, x)
    assert torch.allclose(out, expected, atol=1e-6, rtol=1e-6)
    grad = torch.randn_like(out)
    (got,) = torch.autograd.grad(out, encoding.table, grad)
    (want,) = torch.autograd.grad(expected, encoding.table, grad)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    kinds = [kind for first, stop, kind in encoding.level_runs for _ in range(first, stop)]
    assert kinds == encoding.hashed.tolist()
