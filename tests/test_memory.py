"""`_memory.keep_freed_blocks`: glibc keeps a step's freed activations for the next step."""

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    """In a fresh process with fieldlab's huge pages on (torch then aligns blocks of 2 MiB and more to 2 MiB), a
    4-MiB tensor allocated and freed 50 times is faulted in again each time under glibc's defaults (25,700
    faults on the machines this ran on), and far less often once its freed block is kept (300 to 2,100 there: the
    count of the few blocks torch and glibc still map afresh depends on the machine)."""
    script = """
import resource, sys
import torch
from fieldlab._memory import keep_freed_blocks
if sys.argv[1] == "keep":
    assert keep_freed_blocks() is True
x = torch.ones(1 << 20)
for _ in range(3):
    (x + 1).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    (x + 1).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    env_faults = {}
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True,
                             env={"THP_MEM_ALLOC_ENABLE": "1", "PATH": ""})
        env_faults[mode] = int(out.stdout.split()[-1])
    # 4 MiB is 1,024 pages of 4 KiB (2 of 2 MiB): 50 allocations fault in tens of thousands of pages; kept, the
    # block is reused and the count falls by an order of magnitude (equal counts would mean the setting did nothing)
    assert env_faults["default"] > 5_000 and env_faults["keep"] * 5 < env_faults["default"], env_faults
