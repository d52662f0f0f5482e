"""Mixed-precision helpers shared by fields and encodings."""

import torch
import torch.nn as nn


def full(x: torch.Tensor) -> torch.Tensor:
    """`x` in at least fp32: half-precision tensors are upcast, fp32 and fp64 pass through."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


FEW_COLUMNS = 8
"""Up to this many input columns, `exact_linear` at reduced matmul precision is a loop of products."""


def exact_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias in full (IEEE fp32) precision, whatever the matmul precision of the moment.

    A first layer or a Fourier projection turns coordinates into phases of hundreds or thousands of
    radians (SIREN's audio ω₀ = 3000): a TF32 or bf16 matmul (10 or 7 mantissa bits) would scramble
    them. Where fp32 matmuls are IEEE (precision "highest", the default) this is a plain fp32 linear
    layer. Otherwise a few columns (coordinates) are elementwise products, which never reach the matrix
    units, and many (an encoding's features) one fp64 matmul, rounded back: a loop over hundreds of
    columns would cost hundreds of kernels.
    """
    if weight.ndim != 2:  # weights broadcast over leading dims (MINER's blocks): the products as written
        return _products(x, weight, bias)
    with torch.autocast(x.device.type, enabled=False):  # a caller's bf16 autocast must not reach these
        # allow_tf32 is what set_float32_matmul_precision("high") sets; unlike that precision's getter, it is
        # read by torch.compile without a graph break
        if not torch.backends.cuda.matmul.allow_tf32 and x.dtype == weight.dtype == torch.float32:
            return nn.functional.linear(x, weight, bias)
        if weight.shape[1] > FEW_COLUMNS:
            wide = nn.functional.linear(x.double(), weight.double(), None if bias is None else bias.double())
            return wide.to(torch.promote_types(x.dtype, weight.dtype))
    return _products(x, weight, bias)


def _products(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = x[..., 0:1] * weight[:, 0]
    for i in range(1, weight.shape[1]):
        out = out + x[..., i:i + 1] * weight[:, i]
    return out if bias is None else out + bias
