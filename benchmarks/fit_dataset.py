"""Dataset fitting benchmark: thousands of SIRENs on 32×32×3 natural patches, against a plain reference.

    python benchmarks/fit_dataset.py --patches 20000 --steps 500 --out results.json
    python benchmarks/fit_dataset.py --functa [benchmarks/functa.py's options]   # functa, spatial functa

Data: `sample:patches:N` (seeded crops of scikit-image's colour photos; no zarr, no download). For SIREN
2×32 and 3×64 (ω₀ 30, shared init, lr 1e-3) it reports fields per second and mean PSNR after `--steps`
full-batch Adam steps for

- `reference`: a plain stacked-weights SIREN ([f, in, out] weights, `baddbmm`, fused Adam, constant lr),
  eager fp32, written out here: the "torch eager bmm" row of the anchor table;
- `fieldlab` variants: `fit.batched.fit_batch` (FieldStack's vmap path, exponential lr decay to 0.1)
  in fp32 eager, tf32 + compile, bf16 + compile, and bf16 + compile on half the pixels per step.

Both start from the same initialisation. Fields/s = fields / (wall time of all steps − the first step),
so compilation is left out; the eager rows run on `--eager-fields` patches (throughput is flat in N past
a few thousand on an H100, anchor §3.3) to save device time, the compiled ones on all patches in chunks.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fieldlab.fields import make_config  # noqa: E402
from fieldlab.fit.batched import BatchedFitConfig, fit_batch, init_params  # noqa: E402
from fieldlab.signals import grid_coords  # noqa: E402
from fieldlab.signals.datasets import Augmented, open_source  # noqa: E402

torch._dynamo.config.cache_size_limit = 64
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU only for a smoke test of the script
ANCHOR = {"2x32": 1580.0, "3x64": 438.0}  # fields/s, JAX fit-a-nef re-creation on an H100


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
    parser.add_argument("--variants", default="reference,fp32,tf32+compile,bf16+compile,bf16+compile+half")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    source = open_source(f"sample:patches:{args.patches}")
    values = Augmented(source).values(range(len(source))).to(DEVICE)  # (N, 1024, 3)
    info = source.info()
    coords = grid_coords(info.domain, info.domain, info.shape)
    results = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__,
               "patches": args.patches, "steps": args.steps, "rows": []}
    print(f"{results['device']}, torch {torch.__version__}: {args.patches} patches, {args.steps} steps", flush=True)
    for size in args.sizes.split(","):
        layers, width = map(int, size.split("x"))
        config = make_config("siren", in_dim=2, out_dim=3, hidden_dim=width, num_layers=layers)
        for variant in args.variants.split(","):
            eager = "compile" not in variant
            n = min(args.eager_fields, args.patches) if eager else args.patches
            torch.cuda.reset_peak_memory_stats() if DEVICE == "cuda" else None
            try:
                if variant == "reference":
                    rate, psnr, gib = reference_fit(config, coords, values[:n], args.steps, 1e-3, 0)
                else:
                    precision = variant.split("+")[0]
                    fit = BatchedFitConfig(steps=args.steps, target_psnr=0.0, device=DEVICE, precision=precision,
                                           compile=not eager, sample_fraction=0.5 if variant.endswith("half") else 0.0)
                    rate, psnr, gib = ours(config, coords, values[:n], fit, args.chunk)
            except Exception as error:  # one failed variant must not lose the others' numbers
                print(f"{size} {variant}: failed: {type(error).__name__}: {str(error)[:300]}", flush=True)
                continue
            row = {"size": size, "variant": variant, "fields": n, "fields_per_s": round(rate, 1),
                   "psnr": round(psnr, 2), "peak_gib": round(gib, 2), "x_anchor": round(rate / ANCHOR[size], 2)}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
