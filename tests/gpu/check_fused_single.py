"""GPU check of a single field fitted by the fused kernel (`Fitter(..., fused_spec=...)`, what `fieldlab fit
--kernel fused` runs) against the reference path (run on a CUDA machine, not by pytest).

    python tests/gpu/check_fused_single.py     # exit status 1 if any check fails
    python tests/gpu/check_fused_single.py --smoke   # on the CPU, through Triton's interpreter (CI)

On scikit-image's astronaut at 256×256 (65,536 points) with SIREN 3×64 it checks, from the same
initialisation and schedule: the parameters after 5 fp32 steps (max |Δ| / max |p| ≤ 1e-4: the split
kernel sums partial gradients atomically, in no fixed order), the end PSNR of a 500-step fit per
precision, full batch and with 16,384 random points per step (|Δ| ≤ 0.1 dB), and that `fit` with
`--kernel auto` at tf32 takes the kernel from AUTO_MIN_POINTS points per step and not below (at fp32 it
takes the reference path for fields wider than 32, `kernels.fused.FP32_AUTO_MAX_WIDTH`). At tf32 and
bf16 the reference runs in fp32 with the kernel's rounding emulated (`kernels.rounded_operands`;
autocast would also round the pre-activations, which the kernel keeps in fp32, and cuBLAS's TF32 rounds
differently: tests/gpu/check_fused.py).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from fieldlab.fields import make_config  # noqa: E402
from fieldlab.kernels import fused as fused_module  # noqa: E402
from fieldlab.kernels import fused_spec  # noqa: E402
from fieldlab.kernels import rounded_operands  # noqa: E402
from fieldlab.fit import FitConfig, Fitter, fit  # noqa: E402
from fieldlab.fit.config import AUTO_MIN_POINTS  # noqa: E402
from fieldlab.signals import load_signal  # noqa: E402

PARAM_TOL, PSNR_TOL = 1e-4, 0.1


def fitters(config, signal, fit_config: FitConfig) -> tuple[Fitter, Fitter]:
    """(fused, reference) fitters of one initialisation; the reference runs at fp32, where
    `rounded_operands` gives it the kernel's arithmetic."""
    torch.manual_seed(0)
    field = config.build()
    kwargs = dict(lr=type(config).lr, betas=type(config).adam_betas, eps=type(config).adam_eps)
    coords, values = signal.coords(), signal.flat_values()
    fused = Fitter(copy.deepcopy(field), coords, values, fit_config, fused_spec=fused_spec(config), **kwargs)
    reference = Fitter(field, coords, values, dataclasses.replace(fit_config, precision="fp32"), **kwargs)
    return fused, reference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--precisions", default="fp32,tf32,bf16")
    parser.add_argument("--smoke", action="store_true",
                        help="On the CPU through Triton's interpreter, a 32×32 image and a few steps: that the "
                             "check runs end to end (tests/gpu/test_smoke.py); `auto` is not checked.")
    args = parser.parse_args()
    if args.smoke:
        fused_module.use_interpreter()
        device, size, steps, subset = "cpu", 32, 3, 256
    else:
        assert torch.cuda.is_available(), "this check needs a CUDA device"
        device, size, steps, subset = "cuda", 256, args.steps, 16384
    signal = load_signal("sample:astronaut", max_size=size)
    config = make_config("siren", in_dim=2, out_dim=signal.info.channels, hidden_dim=64, num_layers=3)
    failures = 0

    def report(name: str, value: float, tolerance: float) -> None:
        nonlocal failures
        ok = value <= tolerance
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {value:.3g} (≤ {tolerance:g})", flush=True)

    name = torch.cuda.get_device_name() if device == "cuda" else "smoke run on the CPU"
    print(f"{name}, torch {torch.__version__}; SIREN 3×64 on astronaut {size}×{size}")
    fast, reference = fitters(config, signal, FitConfig(steps=5, device=device))
    for _ in range(5):
        fast.step(), reference.step()
    scale = max(p.abs().max().item() for p in reference.field.parameters())
    error = max((a - b).abs().max().item() for a, b in zip(fast.field.parameters(), reference.field.parameters()))
    report(f"fp32 parameters after 5 steps ({fast._fused.stack.default_parts(fast.num_points)} parts), "
           "max |Δ| / max |p|", error / scale, PARAM_TOL)
    for precision in args.precisions.split(","):
        for batch_size in (0, subset):
            fit_config = FitConfig(steps=steps, precision=precision, batch_size=batch_size, device=device)
            pair = fitters(config, signal, fit_config)
            for fitter in pair:
                with rounded_operands(precision) if fitter is pair[1] else contextlib.nullcontext():
                    while not fitter.should_stop():
                        fitter.step()
            fused_psnr, reference_psnr = (fitter.full_psnr() for fitter in pair)
            report(f"{precision}, {batch_size or 'all'} points per step: end PSNR fused {fused_psnr:.2f} vs reference "
                   f"{reference_psnr:.2f} dB, |Δ|", abs(fused_psnr - reference_psnr), PSNR_TOL)
    auto_rows = ((AUTO_MIN_POINTS, "fused"), (AUTO_MIN_POINTS // 2, "reference")) if device == "cuda" else ()
    for batch_size, expected in auto_rows:  # auto never takes the kernel on a CPU: nothing to check there
        result = fit(signal, config, FitConfig(steps=20, batch_size=batch_size, device="cuda", precision="tf32"))
        ok = result.metrics["kernel"] == expected
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} --kernel auto, {batch_size:,} points per step: {result.metrics['kernel']}")
    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
