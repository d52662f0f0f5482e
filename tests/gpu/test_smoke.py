"""The GPU checks run end to end: each script in its smoke mode (on the CPU, through Triton's
interpreter, a few fields and steps), so that a change which breaks a check is found here and not in
the few minutes of a GPU machine. What they measure is checked on a GPU (BENCHMARKS.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def _run(script: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the script sets it itself
    done = subprocess.run([sys.executable, str(HERE / script), "--smoke", *args], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_check_fused_runs():
    # both precisions on narrow fields; wide fields (the graph refused) at fp32 only: their bf16 row took 40 s of
    # the interpreter's time on 2 cores and tests nothing the narrow bf16 row does not
    outs = [_run("check_fused.py", "--configs", "siren-2x32", "--precisions", "fp32,bf16"),
            _run("check_fused.py", "--configs", "siren-3x128", "--precisions", "fp32")]
    rows = [line for out in outs for line in out.splitlines() if line.startswith(("ok", "FAIL", "open"))]
    assert [row.split(":")[0].split(None, 1)[1] for row in rows] == [
        "siren 2x32 fp32", "siren 2x32 bf16", "siren 3x128 fp32"]
    assert all(row.startswith("ok") for row in rows), rows
    assert "CUDA graphs vs launches" in rows[0] and "refused" in rows[2]
    assert all(out.rstrip().endswith("all checks passed") for out in outs)


def test_check_fused_single_runs():
    out = _run("check_fused_single.py", "--precisions", "fp32,bf16")
    rows = [line for line in out.splitlines() if line.startswith(("ok", "FAIL"))]
    assert len(rows) == 5 and all(row.startswith("ok") for row in rows), out
    assert out.rstrip().endswith("all checks passed")


def test_check_miner_fused_runs():
    out = _run("check_miner_fused.py")
    rows = [line for line in out.splitlines() if line.startswith(("ok", "FAIL"))]
    assert len(rows) == 8 and all(row.startswith("ok") for row in rows), out
    assert out.rstrip().endswith("all checks passed")


def test_check_hashgrid_runs():
    out = _run("check_hashgrid.py")
    rows = [line for line in out.splitlines() if line.startswith(("ok", "FAIL"))]
    assert len(rows) == 4 and all(row.startswith("ok") for row in rows), out
    assert out.rstrip().endswith("all checks passed")
