"""Dataset fitting benchmark: thousands of SIRENs on 32×32×3 natural patches, against a plain reference.

    python benchmarks/fit_dataset.py --patches 20000 --steps 500 --out results.json
    python benchmarks/fit_dataset.py --functa [benchmarks/functa.py's options]   # functa, spatial functa

Data: `sample:patches:N` (seeded crops of scikit-image's colour photos; no zarr, no download). For SIREN
2×32 and 3×64 (ω₀ 30, shared init, lr 1e-3) it reports fields per second and mean PSNR after `--steps`
full-batch Adam steps for

- `reference`: a plain stacked-weights SIREN ([f, in, out] weights, `baddbmm`, fused Adam, constant lr),
  eager fp32, written out here: the "torch eager bmm" row of the anchor table;
- `fieldlab` variants: `fit.batched.fit_batch` on the reference path (FieldStack's vmap) in fp32 eager,
  tf32 + compile, bf16 + compile, and bf16 + compile on half the pixels per step;
- `fused-fp32`, `fused-tf32`, `fused-bf16`: `fit_batch` on the fused Triton kernel (issue 8), its steps
  replayed as CUDA graphs; `+nograph` launches every step from Python instead.

`--field fourier --frequencies F` fits ReLU MLPs on F Gaussian Fourier features (σ `--sigma`, lr 4e-3)
instead; the plain `reference` covers SIRENs only, so there `fp32` (fit_batch's reference path) is the
baseline.

TFLOP/s counts 3× the forward multiply-adds ×2 per point and step (forward + backward); the fraction is
of the H100's (and H200's) dense peak of the precision used (fp32 67, TF32 495, bf16 989 TFLOP/s).

Both start from the same initialisation. Fields/s = fields / (wall time of all steps − the first step),
so compilation is left out; the eager rows run on `--eager-fields` patches (throughput is flat in N past
a few thousand on an H100, anchor §3.3) to save device time, the compiled ones on all patches in chunks.
"""

from __future__ import annotations

import argparse
import json
import re
import runpy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fieldlab.fields import make_config  # noqa: E402
from fieldlab.kernels import fused as fused_module  # noqa: E402
from fieldlab.kernels import fused_spec  # noqa: E402
from fieldlab.fit.batched import BatchedFitConfig, fit_batch, init_params  # noqa: E402
from fieldlab.signals import grid_coords  # noqa: E402
from fieldlab.signals.datasets import Augmented, open_source  # noqa: E402

torch._dynamo.config.cache_size_limit = 64
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU only for a smoke test of the script
ANCHOR = {"2x32": 1580.0, "3x64": 438.0}  # fields/s, JAX fit-a-nef re-creation on an H100
PEAK_TFLOPS = {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}  # H100 SXM dense; an H200 has the same


def reference_fit(config, coords, values, steps: int, lr: float, seed: int) -> tuple[float, float, float]:
    """Plain stacked-weights SIREN: returns (fields/s after the first step, mean PSNR, peak GiB)."""
    f = values.shape[0]
    _, params, _ = init_params(config, np.arange(f), "shared", seed)
    layers = config.num_layers + 1
    weights = [params[f"layers.{i}.weight"].transpose(1, 2).contiguous().to(DEVICE).requires_grad_() for i in range(layers)]
    biases = [params[f"layers.{i}.bias"][:, None, :].contiguous().to(DEVICE).requires_grad_() for i in range(layers)]
    optimizer = torch.optim.Adam(weights + biases, lr=lr, fused=DEVICE == "cuda")
    x0 = coords.to(DEVICE).expand(f, -1, -1)

    def forward():
        h = x0
        for i in range(layers - 1):
            h = torch.sin((config.first_omega0 if i == 0 else config.omega0) * torch.baddbmm(biases[i], h, weights[i]))
        return torch.baddbmm(biases[-1], h, weights[-1])

    sync()
    for step in range(steps):
        if step == 1:
            sync()
            start = time.perf_counter()
        loss = (forward() - values).square().mean(dim=(1, 2)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        mse = (forward() - values).square().mean(dim=(1, 2)).double()
    psnr = float((10 * torch.log10(4 / mse)).mean())
    return f * (steps - 1) / steps / seconds, psnr, peak()


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def peak() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0


def ours(config, coords, values, fit: BatchedFitConfig, chunk: int) -> tuple[float, float, float]:
    """fieldlab's batched fitting over `values` in chunks: (fields/s, mean PSNR, peak GiB)."""
    seconds, psnrs = 0.0, []
    for start in range(0, values.shape[0], chunk):
        part = values[start:start + chunk]
        result = fit_batch(config, coords, part, np.arange(start, start + len(part)), fit)
        # Compile and the first step out; steps after it scaled back to a whole run.
        seconds += (result.seconds - result.first_step_seconds) * fit.steps / (fit.steps - 1)
        psnrs.append(result.psnr)
    return values.shape[0] / seconds, float(np.mean(np.concatenate(psnrs))), peak()


def tune(sizes: list[str], values: torch.Tensor, coords: torch.Tensor, grid: str, precisions: str,
         steps: int = 30) -> None:
    """Fused steps per second for every (points per chunk, warps): the kernel's defaults come from here."""
    from fieldlab.kernels import FusedStack

    narrow = fused_module.NARROW_DIMS
    f = values.shape[0]
    rows = torch.arange(f, device=DEVICE)
    coords = coords.to(DEVICE)
    for size in sizes:
        layers, width = map(int, size.split("x"))
        config = make_config("siren", in_dim=2, out_dim=3, hidden_dim=width, num_layers=layers)
        _, params, _ = init_params(config, np.arange(f), "shared", 0)
        params = {k: v.to(DEVICE) for k, v in params.items()}
        for precision in precisions.split(","):
            for shape in grid.split(","):
                # "32x4": 32 points per chunk, 4 warps; then r / k: reload / keep the weights, e: exact sine,
                # w / n: the first layer of 2-D coordinates as a 16-column tile / one product per coordinate
                # (else as NARROW_DIMS says), sN: N pipeline
                # stages, mN: at most N registers per thread, cN: recompute N layers' z, b: the biases'
                # gradients as products of ones on the tensor cores, p: as partial sums in the lanes (one
                # warp), neither: sums across the lanes; f: the first layer as a TF32×3 tile
                match = re.fullmatch(r"(\d+)x(\d+)([rk]?)(e?)([wn]?)(?:s(\d+))?(?:m(\d+))?(?:c(\d))?([bp]?)(f?)", shape)
                if not match:
                    raise SystemExit(f"--tune-grid: cannot read {shape!r}")
                block, warps = int(match[1]), int(match[2])
                reload = {"r": True, "k": False}.get(match[3])
                stages, registers = (int(match[6]) if match[6] else None), (int(match[7]) if match[7] else None)
                fused_module.FAST_TRIG = not match[4]  # e: exact sine and cosine
                fused_module.NARROW_DIMS = {"w": (), "n": (2,)}.get(match[5], narrow)
                try:
                    stack = FusedStack(fused_spec(config), params, precision=precision, block=block, warps=warps,
                                       reload=reload, stages=stages, max_registers=registers,
                                       recompute=int(match[8] or 0), sums={"b": 1, "p": 2}.get(match[9], 0),
                                       first=int(bool(match[10])))
                    stack.step(coords, values, rows, 1e-3)
                    sync()
                    start = time.perf_counter()
                    for _ in range(steps):
                        stack.step(coords, values, rows, 1e-3)
                    sync()
                    rate = f * steps / (time.perf_counter() - start) / 500
                    print(json.dumps({"tune": size, "precision": precision, "block": block, "warps": warps,
                                      "reload": stack.reload, "exact_trig": bool(match[4]), "stages": stages,
                                      "max_registers": registers, "recompute": int(match[8] or 0),
                                      "sums": {"b": 1, "p": 2}.get(match[9], 0), "first": int(bool(match[10])),
                                      "first_layer": "narrow" if fused_module.NARROW_DIMS else "tile",
                                      "fields_per_s_at_500_steps": round(rate, 1)}), flush=True)
                except Exception as error:
                    print(f"tune {size} {precision} {block} {warps}: {type(error).__name__}: {str(error)[:200]}")


def main() -> None:
    if "--functa" in sys.argv:  # functa / spatial functa PSNR vs latent size: benchmarks/functa.py, its own options
        sys.argv.remove("--functa")
        runpy.run_path(str(Path(__file__).with_name("functa.py")), run_name="__main__")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=20000)
    parser.add_argument("--eager-fields", type=int, default=5000)
    parser.add_argument("--chunk", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--sizes", default="2x32,3x64")
    parser.add_argument("--field", choices=["siren", "fourier"], default="siren")
    parser.add_argument("--frequencies", type=int, default=32, help="Fourier features (--field fourier).")
    parser.add_argument("--sigma", type=float, default=5.0, help="Their standard deviation (--field fourier).")
    parser.add_argument("--variants", default="reference,fp32,tf32+compile,bf16+compile,bf16+compile+half,"
                        "fused-fp32,fused-tf32,fused-bf16")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--tune", action="store_true", help="Only time the fused kernel's block shapes.")
    parser.add_argument("--tune-grid", default="32x2,32x4,32x8,64x2,64x4,64x8,128x4,128x8",
                        help="Points per chunk x warps to time with --tune.")
    parser.add_argument("--tune-precisions", default="tf32,bf16")
    args = parser.parse_args()

    source = open_source(f"sample:patches:{args.patches}")
    values = Augmented(source).values(range(len(source))).to(DEVICE)  # (N, 1024, 3)
    info = source.info()
    coords = grid_coords(info.domain, info.domain, info.shape)
    results = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__,
               "patches": args.patches, "steps": args.steps, "rows": []}
    print(f"{results['device']}, torch {torch.__version__}: {args.patches} patches, {args.steps} steps", flush=True)
    if args.tune:
        tune(args.sizes.split(","), values, coords, args.tune_grid, args.tune_precisions)
        return
    for size in args.sizes.split(","):
        layers, width = map(int, size.split("x"))
        extra = dict(num_frequencies=args.frequencies, sigma=args.sigma) if args.field == "fourier" else {}
        config = make_config(args.field, in_dim=2, out_dim=3, hidden_dim=width, num_layers=layers, **extra)
        for variant in args.variants.split(","):
            eager = "compile" not in variant and not variant.startswith("fused")
            n = min(args.eager_fields, args.patches) if eager else args.patches
            torch.cuda.reset_peak_memory_stats() if DEVICE == "cuda" else None
            try:
                if variant == "reference" and args.field != "siren":
                    print(f"{size} reference: a plain SIREN, skipped for {args.field} fields", flush=True)
                    continue
                if variant == "reference":
                    rate, psnr, gib = reference_fit(config, coords, values[:n], args.steps, 1e-3, 0)
                else:
                    fused = variant.startswith("fused-")
                    precision = variant.removeprefix("fused-").split("+")[0]
                    fit = BatchedFitConfig(steps=args.steps, target_psnr=0.0, device=DEVICE, precision=precision,
                                           compile="compile" in variant, kernel="fused" if fused else "reference",
                                           sample_fraction=0.5 if variant.endswith("half") else 0.0,
                                           cuda_graphs="nograph" not in variant,
                                           lr=4e-3 if args.field == "fourier" else None)
                    rate, psnr, gib = ours(config, coords, values[:n], fit, args.chunk)
            except Exception as error:  # one failed variant must not lose the others' numbers
                print(f"{size} {variant}: failed: {type(error).__name__}: {str(error)[:300]}", flush=True)
                continue
            precision = "fp32" if variant == "reference" else variant.removeprefix("fused-").split("+")[0]
            points = values.shape[1] * (0.5 if variant.endswith("half") else 1.0)
            tflops = rate * args.steps * points * 3 * fused_spec(config).flops_per_point() / 1e12
            row = {"field": args.field, "size": size, "variant": variant, "fields": n, "chunk": args.chunk,
                   "fields_per_s": round(rate, 1),
                   "psnr": round(psnr, 2), "peak_gib": round(gib, 2),
                   "x_anchor": round(rate / ANCHOR[size], 2) if size in ANCHOR and args.field == "siren" else None,
                   "tflops": round(tflops, 1), "peak_fraction": round(tflops / PEAK_TFLOPS[precision], 3)}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
