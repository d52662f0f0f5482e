"""The multiresolution hash encoding in two Triton launches: the forward pass, and its table's gradient.

`HashGridEncoding.forward` (pure PyTorch, the reference path) builds (points, levels, corners, dims) int64
tensors of vertices, indices and weights: at 512² points and 16 levels, hundreds of MB written and read
again by a few dozen launches per step, and as many in the backward pass. `kernels.triton`'s
`hash_encode` computes each point's corners, table rows and weights in registers, level by level,
and writes only the (points, levels · features) output; with `BACKWARD` it recomputes them and adds
weight × gradient into the table's gradient atomically. Values are the reference path's (the same fp32
operations, compiled without FMA contraction: a contracted x·r − ⌊x·r⌋ is exact where the reference rounds
x·r first, up to 3e-5 at r = 512), the table's gradient the same up to the order of its sums.

`HashGridEncoding` takes this path where `usable` says so: CUDA with Triton, an fp32 table, at most
`MAX_DIMS` coordinates, no gradient wanted for the coordinates, outside `torch.func` transforms (the batched
path's vmap) and `torch.compile`, and unless deterministic algorithms were asked for (the atomic sums are
not). Everything else, the CPU included, runs the reference path.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

MAX_DIMS = 4
"""Most coordinate dimensions the kernels take (2^4 corners a cell)."""
ENABLED = True
"""False: the reference path everywhere (benchmarks and checks compare the two in one process)."""
BLOCK = 256
"""Points per program."""
WARPS = 4


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def usable(coords: torch.Tensor, table: torch.Tensor) -> bool:
    """Whether the kernels encode `coords` (n, d) (already in fp32) against `table`: on CUDA, when `applicable`."""
    return table.is_cuda and coords.is_cuda and applicable(coords, table)


def applicable(coords: torch.Tensor, table: torch.Tensor) -> bool:
    """Whether the kernels compute what the reference path would for these tensors, wherever they are."""
    if not (ENABLED and coords.dtype == torch.float32 and table.dtype == torch.float32
            and coords.shape[-1] <= MAX_DIMS and not coords.requires_grad):
        return False
    if torch._C._functorch.is_functorch_wrapped_tensor(table) or \
            torch._C._functorch.is_functorch_wrapped_tensor(coords):
        return False
    if torch.compiler.is_compiling() or torch.are_deterministic_algorithms_enabled():
        return False
    return _triton_installed()


def encode(coords: torch.Tensor, table: torch.Tensor, levels: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The encoding (n, L·F) of coords (n, d) in [−1, 1] (clamped), differentiable in `table` (rows, F).
    `levels` = (resolutions fp32, sizes int64, offsets int64, hashed bool, primes int64), the encoding's
    buffers, on the table's device."""
    return _Encode.apply(coords, table, levels)


def _launch(coords: torch.Tensor, source: torch.Tensor, destination: torch.Tensor, levels: tuple[torch.Tensor, ...],
            features: int, backward: bool) -> None:
    import fieldlab.kernels.triton as kernels  # Triton is imported where a kernel runs, not at start-up

    n, d = coords.shape
    if n == 0:
        return
    resolutions, sizes, offsets, hashed, primes = levels
    grid = (-(-n // BLOCK),)
    kernels.hash_encode[grid](
        coords, source, destination, resolutions, sizes, offsets, hashed, primes, n, L=resolutions.numel(), D=d,
        F=features, FP=1 << (features - 1).bit_length(), BLOCK=BLOCK, BACKWARD=backward, num_warps=WARPS,
        enable_fp_fusion=False)


class _Encode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, coords: torch.Tensor, table: torch.Tensor, levels: tuple[torch.Tensor, ...]) -> torch.Tensor:
        coords = coords.contiguous()
        table = table.contiguous()
        features = table.shape[1]
        out = torch.empty(coords.shape[0], levels[0].numel() * features, dtype=torch.float32, device=coords.device)
        _launch(coords, table, out, levels, features, backward=False)
        ctx.save_for_backward(coords)
        ctx.levels = levels
        ctx.table_shape = table.shape
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (coords,) = ctx.saved_tensors
        grad_table = None
        if ctx.needs_input_grad[1]:
            grad_table = torch.zeros(ctx.table_shape, dtype=torch.float32, device=grad.device)
            _launch(coords, grad.float().contiguous(), grad_table, ctx.levels, ctx.table_shape[1], backward=True)
        return None, grad_table, None
