"""The fused kernels against the GPUs' limits, found without a GPU: Triton compiles them for a named
architecture and its ptxas reports registers and spills (kernels/resources.py). `choose_kernel`
must never hand a launch a kernel that asks more shared memory than the GPU allows (Triton would raise
at the first step, after the output is made): `auto` falls back to the reference path, `--kernel fused`
refuses in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fieldlab.kernels.resources import HOPPER, KernelResources

AUTO_CORNERS = [  # the widest fields that auto takes at each precision: they must fit an H100
    dict(field="siren", options=dict(hidden_dim=32, num_layers=4), in_dim=8, out_dim=16, precision="fp32"),
    dict(field="siren", options=dict(hidden_dim=64, num_layers=4), in_dim=8, out_dim=16, precision="tf32"),
    dict(field="siren", options=dict(hidden_dim=64, num_layers=4), in_dim=8, out_dim=16, precision="bf16"),
    dict(field="fourier", options=dict(hidden_dim=64, num_layers=4, num_frequencies=32), precision="tf32"),
    dict(field="fourier", options=dict(hidden_dim=64, num_layers=4, num_frequencies=32), precision="bf16"),
]
QUESTIONS = (
    [dict(q, gpu="hopper", kernel="auto") for q in AUTO_CORNERS]
    + [
        # fit-dataset's default and the 3×64 of the benchmark, with what their kernels need
        dict(field="siren", options=dict(hidden_dim=32, num_layers=2), precision="bf16", gpu="hopper",
             kernel="fused", resources=True),
        dict(field="siren", options=dict(hidden_dim=64, num_layers=3), precision="tf32", gpu="hopper",
             kernel="fused", resources=True),
        # forced, too large for an H100: refused in a sentence
        dict(field="siren", options=dict(hidden_dim=64, num_layers=4), precision="fp32", gpu="hopper", kernel="fused"),
        dict(field="siren", options=dict(hidden_dim=128, num_layers=4), precision="bf16", gpu="hopper", kernel="fused"),
        dict(field="siren", options=dict(hidden_dim=128, num_layers=3), precision="bf16", gpu="hopper", kernel="fused"),
        # a GPU with 99 KB per program: auto keeps the small kernel and falls back for the larger (125 KB)
        dict(field="siren", options=dict(hidden_dim=32, num_layers=2), precision="bf16", gpu="ada", kernel="auto"),
        dict(field="siren", options=dict(hidden_dim=64, num_layers=4), precision="tf32", gpu="ada", kernel="auto"),
        # a GPU whose limits cannot be read: the check steps aside (Triton's own at launch remains)
        dict(field="siren", options=dict(hidden_dim=32, num_layers=2), precision="bf16", gpu="unreadable",
             kernel="auto"),
        # evaluation (the forward kernel): 3×128 at fp32 fits an H100 (not refused as the step kernel is)
        dict(field="siren", options=dict(hidden_dim=128, num_layers=3), precision="fp32", gpu="hopper",
             kernel="fused", forward=True),
        # the 3×64 fp32 step kernel fits an H100 (197 KB) but not an A100 (181 KB of 163)
        dict(field="siren", options=dict(hidden_dim=64, num_layers=3), precision="fp32", gpu="hopper",
             kernel="fused"),
        dict(field="siren", options=dict(hidden_dim=64, num_layers=3), precision="fp32", gpu="ampere",
             kernel="fused"),
    ]
)


@pytest.fixture(scope="module")
def answers():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    probe = Path(__file__).with_name("resources_probe.py")
    done = subprocess.run([sys.executable, str(probe)], input=json.dumps(QUESTIONS), capture_output=True,
                          text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _answer(answers, **match):
    found = [a for a in answers if all(a.get(k) == v for k, v in match.items())]
    assert len(found) == 1, match
    return found[0]


def test_auto_takes_the_kernel_for_its_widest_fields_on_hopper(answers):
    for answer in answers[:len(AUTO_CORNERS)]:
        assert answer.get("fused") is True, answer


def test_forced_kernels_too_large_for_the_gpu_are_refused_in_one_line(answers):
    for width, layers, precision in [(64, 4, "fp32"), (128, 4, "bf16")]:
        answer = _answer(answers, gpu="hopper", kernel="fused", precision=precision,
                         options=dict(hidden_dim=width, num_layers=layers))
        error = answer.get("error", "")
        assert "KB of shared memory" in error and "sm_90" in error and "\n" not in error, answer
    assert _answer(answers, gpu="hopper", kernel="fused", precision="bf16",
                   options=dict(hidden_dim=128, num_layers=3)).get("fused") is True


def test_auto_falls_back_where_the_kernel_does_not_fit(answers):
    assert _answer(answers, gpu="ada", precision="bf16", options=dict(hidden_dim=32, num_layers=2))["fused"] is True
    fallback = _answer(answers, gpu="ada", precision="tf32", options=dict(hidden_dim=64, num_layers=4))
    assert fallback["fused"] is False
    assert fallback["log"].startswith("reference path") and "KB of shared memory" in fallback["log"], fallback


def test_each_kernel_is_checked_against_the_gpu_it_runs_on(answers):
    assert _answer(answers, gpu="hopper", forward=True)["fused"] is True
    assert _answer(answers, gpu="hopper", kernel="fused", precision="fp32",
                   options=dict(hidden_dim=64, num_layers=3))["fused"] is True
    assert "sm_80" in _answer(answers, gpu="ampere", precision="fp32")["error"]


def test_compiled_resources_are_reported(answers):
    small = _answer(answers, gpu="hopper", kernel="fused", precision="bf16", options=dict(hidden_dim=32, num_layers=2))
    large = _answer(answers, gpu="hopper", kernel="fused", precision="tf32", options=dict(hidden_dim=64, num_layers=3))
    for answer in (small, large):
        kernel = KernelResources(**answer["resources"])
        assert 0 < kernel.registers <= 255 and kernel.fits(HOPPER), answer
        assert kernel.warps == (1 if answer is small else 4)  # default_block: one warp up to 32 wide
    assert KernelResources(**small["resources"]).shared < KernelResources(**large["resources"]).shared


def test_programs_per_multiprocessor_follow_the_tightest_limit():
    # 255 registers × 4 warps: 2 programs per H100 multiprocessor (what Nsight Compute measured for the
    # 3×64 kernel: 12.5% occupancy)
    kernel = KernelResources(registers=255, spill_stores=0, spill_loads=0, shared=61_440, warps=4)
    assert kernel.programs(HOPPER)["registers"] == 2 and kernel.limit(HOPPER) == "registers"
    assert kernel.occupancy(HOPPER) == pytest.approx(0.125)
    shared_bound = KernelResources(registers=64, spill_stores=0, spill_loads=0, shared=110_000, warps=4)
    assert shared_bound.limit(HOPPER) == "shared" and shared_bound.programs(HOPPER)["shared"] == 2
    too_large = KernelResources(registers=255, spill_stores=0, spill_loads=0, shared=300_000, warps=8)
    assert not too_large.fits(HOPPER) and too_large.occupancy(HOPPER) == 0.0


def test_a_check_that_cannot_run_leaves_the_choice_as_before(answers):
    assert _answer(answers, gpu="unreadable")["fused"] is True
