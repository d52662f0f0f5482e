"""What torch.distributed gives a torchrun job: rank, world size, sharding, barriers and all-reduces.

The one place fieldlab asks about other processes: dataset fitting, meta-learning, network training and
the output locks all use it. Without torchrun (no WORLD_SIZE in the environment) everything works as one
process of one. Backend: NCCL when every rank has a GPU, gloo otherwise.
"""

from __future__ import annotations

import os
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def launched() -> bool:
    """True inside a torchrun job of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def joined() -> bool:
    """True once this process is in a process group (torchrun's, or one a test set up itself)."""
    return dist.is_available() and dist.is_initialized()


def _uses_cuda(device: str | torch.device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return device != "cpu" and torch.cuda.is_available()


def init(device: str | torch.device = "auto") -> None:
    """Join the process group torchrun describes (a no-op alone or when already joined). `device`: the
    option ("auto", "cpu", "cuda") or the resolved device; a CUDA one takes NCCL, anything else gloo."""
    if not launched() or joined():
        return
    use_cuda = _uses_cuda(device)
    if use_cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")


def finish() -> None:
    if joined():
        # all ranks leave together: a rank that tears its group down while a peer is still at work (rank 0
        # writing a summary) made that peer's gloo abort ('terminate called without an active exception')
        dist.barrier()
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if joined() else 0


def world_size() -> int:
    return dist.get_world_size() if joined() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process is rank 0: of its process group, or before joining one, of the torchrun launch
    (RANK), so that a lock taken before `init` is taken by one process only."""
    if joined():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def device_for(device: str | torch.device) -> Any:
    """This rank's own GPU under torchrun: the option `auto`/`cuda` becomes `cuda:LOCAL_RANK` (a string);
    a resolved CUDA device without an index gets it (a torch.device). Anything else is returned as is."""
    if isinstance(device, torch.device):
        if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
            return torch.device("cuda", local_rank())
        return device
    if launched() and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank()}"
    return device


def barrier() -> None:
    if joined():
        dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share: every world_size-th item from position rank (disjoint, covering all)."""
    return list(items[rank()::world_size()])


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled by torch.distributed between our own processes only)."""
    if not joined():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_(tensor: torch.Tensor) -> None:
    """Overwrite `tensor` with rank 0's, in place (nothing alone)."""
    if joined():
        dist.broadcast(tensor, src=0)


def all_reduce_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks, in place (nothing alone); returns it."""
    if joined():
        dist.all_reduce(tensor)
    return tensor


def all_ok(ok: bool) -> bool:
    """True on every rank when `ok` holds on every rank (so one rank's failure stops all)."""
    if not joined():
        return ok
    flag = torch.tensor([1 if ok else 0])
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


class _SumOverRanks(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum over ranks is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, x):
        return all_reduce_(x.clone())

    @staticmethod
    def backward(ctx, grad):
        return all_reduce_(grad.clone())


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """`x` summed over every rank, differentiably (a copy of `x` alone)."""
    return _SumOverRanks.apply(x)
