"""Mixed-precision helpers shared by fields and encodings."""

import torch


def full(x: torch.Tensor) -> torch.Tensor:
    """`x` in at least fp32: half-precision tensors are upcast, fp32 and fp64 pass through."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def exact_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias for a few input features, as elementwise products in full precision.

    A first layer or a Fourier projection turns coordinates into phases of hundreds or thousands of
    radians (SIREN's audio ω₀ = 3000): a TF32 or bf16 matmul (10 or 7 mantissa bits) would scramble
    them, so these few-column products never go through the matrix units.
    """
    out = x[..., 0:1] * weight[:, 0]
    for i in range(1, weight.shape[1]):
        out = out + x[..., i:i + 1] * weight[:, i]
    return out if bias is None else out + bias
