"""Host memory for loops whose steps allocate the same large tensors again and again (learning on a CPU).

With fieldlab's huge pages on (`fieldlab/__init__.py`), torch asks glibc for blocks of 2 MiB and more aligned
to 2 MiB; under glibc's defaults such a block is mapped afresh and unmapped when freed, so every step faults its
activations in again (a 4-MiB tensor made and freed 50 times: 25,700 page faults; `tests/test_memory.py`). A
train step of DI-Net at 16² points on 2 cores took 4,500 faults and 18 ms of system time; with freed blocks kept
for reuse, 170-340 faults and 2 ms (BENCHMARKS.md, "Freed blocks kept for the next step"). The learn loop
(`learn.loop.train_loop`: `train`, `train-sdf`) and `eval` keep them on a CPU; the fit commands keep
glibc's defaults: there, keeping every block (`M_MMAP_MAX` 0) doubled a fit-dataset's peak memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_BELOW = 256 << 20
"""Blocks below this size come from the heap and go back to it when freed (a step's largest is far smaller)."""
TRIM_ABOVE = 1 << 30
"""The heap's freed top goes back to the system only above this size."""


@functools.lru_cache(maxsize=1)
def keep_freed_blocks() -> bool:
    """Ask glibc to keep freed blocks below KEEP_BELOW for reuse (process-wide, once); False where the C library
    is not glibc (macOS, musl), which keeps its own defaults."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE))
