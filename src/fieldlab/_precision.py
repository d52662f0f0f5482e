"""Mixed-precision helpers shared by fields and encodings."""

import torch


def full(x: torch.Tensor) -> torch.Tensor:
    """`x` in at least fp32: half-precision tensors are upcast, fp32 and fp64 pass through."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
