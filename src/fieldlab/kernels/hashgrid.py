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
path's vmap) and `torch.compile`, unless deterministic algorithms were asked for (the atomic sums are not),
and once the kernels are ready. A process's first Triton launch costs about 0.9 s on an H100 machine (Triton's
imports and the cache key it hashes from its 0.4 GB library, then loading the compiled kernel), more than a
200-step fit saves. So the first call for an encoding's shape prepares the kernels on a daemon thread (one
launch of each on a few points) and takes the reference path until they are ready: the values are the same,
so a fit changes paths between two steps without a seam. Everything else, the CPU included, runs the
reference path.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import torch

from fieldlab.kernels.fused import triton_available

MAX_DIMS = 4
"""Most coordinate dimensions the kernels take (2^4 corners a cell)."""
ENABLED = True
"""False: the reference path everywhere (benchmarks and checks compare the two in one process)."""
BACKGROUND = True
"""Prepare the kernels on a thread (the reference path meanwhile); False: at the first call, on the caller's
thread (benchmarks and checks, which time or check the kernels from their first step)."""
BLOCK = 256
"""Points per program."""
WARPS = 4
_PREPARED: dict[tuple, str] = {}
"""(device, dims, features, levels) → "preparing", "ready" or "failed" (the reference path for good)."""
_LOCK = threading.Lock()


def usable(coords: torch.Tensor, table: torch.Tensor, levels: tuple[torch.Tensor, ...]) -> bool:
    """Whether the kernels encode `coords` (n, d) (already in fp32) against `table` now: on CUDA, when
    `applicable`, once `ready`."""
    return table.is_cuda and coords.is_cuda and applicable(coords, table) and ready(coords, table, levels)


def ready(coords: torch.Tensor, table: torch.Tensor, levels: tuple[torch.Tensor, ...]) -> bool:
    """Whether the kernels for this shape of encoding are loaded in this process. The first call for a shape
    prepares them, on a daemon thread (`BACKGROUND`, answering False until it is done) or here."""
    key = (table.device, coords.shape[-1], table.shape[1], levels[0].numel())
    with _LOCK:
        state = _PREPARED.get(key)
        if state is None:
            _PREPARED[key] = "preparing"
    if state is not None:
        return state == "ready"
    work = (key, coords.shape[-1], table.detach(), levels)
    if BACKGROUND:
        threading.Thread(target=_prepare, args=work, name="fieldlab-hash-kernels", daemon=True).start()
        return False
    _prepare(*work)
    return _PREPARED[key] == "ready"


def _prepare(key: tuple, dims: int, table: torch.Tensor, levels: tuple[torch.Tensor, ...]) -> None:
    """Launch the forward and the backward kernel once on a few points, so that Triton imports, hashes,
    loads and caches them; "failed" (for good) if that raises."""
    try:
        with torch.no_grad():
            points = torch.zeros(16, dims, device=table.device)
            features = torch.empty(16, levels[0].numel() * table.shape[1], device=table.device)
            _launch(points, table, features, levels, table.shape[1], backward=False)
            _launch(points, features, torch.zeros_like(table), levels, table.shape[1], backward=True)
        state = "ready"
    except Exception as error:  # noqa: BLE001 -- a kernel that cannot run here leaves the reference path
        logging.getLogger("fieldlab").debug("hash grid kernels unavailable, PyTorch path kept: %s", error)
        state = "failed"
    with _LOCK:
        _PREPARED[key] = state


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
    return triton_available(coords.device)  # CUDA, or Triton's interpreter (the CPU tests)


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
    with torch.cuda.device(coords.device) if coords.is_cuda else contextlib.nullcontext():  # Triton launches on
        kernels.hash_encode[grid](  # the current device, which a thread (or the caller) may have elsewhere
            coords, source, destination, resolutions, sizes, offsets, hashed, primes, n, L=resolutions.numel(),
            D=d, F=features, FP=1 << (features - 1).bit_length(), BLOCK=BLOCK, BACKWARD=backward, num_warps=WARPS,
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
