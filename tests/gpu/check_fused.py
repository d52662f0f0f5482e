"""GPU check of the fused MLP kernel against the reference path (run on a CUDA machine, not by pytest).

    python tests/gpu/check_fused.py            # exit status 1 if any check fails

For SIREN 2×32, 3×64, 3×128 and Gaussian 2×64 on 32×32×3 patches it compares, per precision:
outputs of the fused forward with `FieldStack` (fp32: max |Δ| ≤ 1e-4), gradients of the summed mean
squared errors with autograd through `FieldStack` in fp32 (max |Δ| / max |g| ≤ 1e-4 fp32, 1e-2 tf32,
5e-2 bf16), and the mean end PSNR of a 500-step `fit_batch` run fused vs reference (|Δ| ≤ 0.1 dB).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from fieldlab.fields import FieldStack, make_config  # noqa: E402
from fieldlab.fields._fused_mlp import FusedStack, fused_spec, pack  # noqa: E402
from fieldlab.fit.batched import BatchedFitConfig, fit_batch, init_params  # noqa: E402
from fieldlab.signals import grid_coords  # noqa: E402
from fieldlab.signals.datasets import Augmented, open_source  # noqa: E402

GRAD_TOL = {"fp32": 1e-4, "tf32": 1e-2, "bf16": 5e-2}
FORWARD_TOL = {"fp32": 1e-4, "tf32": 2e-2, "bf16": 5e-2}
PSNR_TOL = 0.1


CONFIGS = [("siren", 2, 32), ("siren", 3, 64), ("siren", 3, 128), ("gauss", 2, 64)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="siren-2x32,siren-3x64,siren-3x128,gauss-2x64")
    parser.add_argument("--precisions", default="fp32,tf32,bf16")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "this check needs a CUDA device"
    device = torch.device("cuda")
    source = open_source("sample:patches:256")
    values = Augmented(source).values(range(len(source))).to(device)
    info = source.info()
    coords = grid_coords(info.domain, info.domain, info.shape).to(device)
    f, n, c = values.shape
    failures = 0
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {f} patches of {n} points")
    for name, layers, width in CONFIGS:
        if f"{name}-{layers}x{width}" not in args.configs.split(","):
            continue
        extra = {"scale": 3.0} if name == "gauss" else {}
        config = make_config(name, in_dim=2, out_dim=c, hidden_dim=width, num_layers=layers, **extra)
        spec = fused_spec(config)
        template, params, buffers = init_params(config, np.arange(f), "random", 0)
        params = {k: v.to(device) for k, v in params.items()}
        stack = FieldStack(template, {k: v.clone() for k, v in params.items()}, buffers)
        with torch.no_grad():
            reference_out = stack(coords.expand(f, n, -1))
        loss = (stack(coords.expand(f, n, -1)) - values).square().mean(dim=(1, 2)).sum()
        loss.backward()
        reference_grad = pack({k: v.grad for k, v in stack.state()[0].items()}, spec)
        for precision in args.precisions.split(","):
            fused = FusedStack(spec, params, precision=precision)
            out_err = (fused.forward(coords) - reference_out).abs().max().item()
            _, grad = fused.gradients(coords, values, torch.arange(f, device=device), parts=1)
            grad_err = ((grad - reference_grad).abs().max() / reference_grad.abs().max()).item()
            _, grad_split = fused.gradients(coords, values, torch.arange(f, device=device), parts=4)
            split_err = ((grad_split - reference_grad).abs().max() / reference_grad.abs().max()).item()
            psnr, per_field = {}, {}
            for kernel in ("fused", "reference"):
                fit = BatchedFitConfig(steps=500, target_psnr=0.0, device="cuda", precision=precision, kernel=kernel,
                                       lr=3e-3 if name == "gauss" else None)
                result = fit_batch(config, coords, values, np.arange(f), fit)
                assert result.kernel == kernel
                psnr[kernel] = float(np.mean(result.psnr))
                per_field[kernel] = result.psnr
            delta = per_field["fused"] - per_field["reference"]
            ok = (out_err <= FORWARD_TOL[precision] and grad_err <= GRAD_TOL[precision]
                  and split_err <= GRAD_TOL[precision] and abs(psnr["fused"] - psnr["reference"]) <= PSNR_TOL)
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name} {layers}x{width} {precision}: forward max|Δ| {out_err:.2e}, "
                  f"grad rel {grad_err:.2e} (split {split_err:.2e}), 500-step PSNR fused {psnr['fused']:.3f} "
                  f"vs reference {psnr['reference']:.3f} dB (Δ {psnr['fused'] - psnr['reference']:+.3f}; per field: "
                  f"std {delta.std():.3f}, fused higher on {np.mean(delta > 0):.0%})", flush=True)
    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
