"""What torch.distributed gives a torchrun job: rank, world size, sharding and barriers.

Without torchrun (no WORLD_SIZE in the environment) everything works as one process of one.
Backend: NCCL when every rank has a GPU, gloo otherwise.
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


def init(device: str = "auto") -> None:
    """Join the process group torchrun describes (a no-op alone or when already joined)."""
    if not launched() or dist.is_initialized():
        return
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def device_for(name: str) -> str:
    """`auto`/`cuda` become this rank's own GPU under torchrun."""
    if launched() and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank()}"
    return name


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share: every world_size-th item from position rank (disjoint, covering all)."""
    return list(items[rank()::world_size()])


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled by torch.distributed between our own processes only)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_ok(ok: bool) -> bool:
    """True on every rank when `ok` holds on every rank (so one rank's failure stops all)."""
    if not dist.is_initialized():
        return ok
    flag = torch.tensor([1 if ok else 0])
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
