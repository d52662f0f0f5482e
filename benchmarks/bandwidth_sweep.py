"""Bandwidths of every batched field architecture for datasets of small items, chosen on other images.

A field fitted to an 8×8 item must be a sensible function *between* the item's pixel centres too: a network
reading fields at arbitrary points (DI-Net, NUFT) trains on one architecture's fields and is tested on
another's, and every point set but the training grid samples between the centres. So each architecture's
bandwidth knob (SIREN's and FINER's ω₀, a Fourier field's σ, the Gaussian and WIRE scales, a hash grid's
finest resolution, MINER's ω₀, functa's ω₀) is chosen by how well the fitted field predicts what lies
between the centres, on images that are not the ones scored later:

- validation images: `sample:patches` (32×32 photos, grey), never digits;
- each photo is area-averaged to N×N (N = 8, 16) and fitted by `fieldlab fit-dataset` at the dataset
  defaults with one knob changed (the command a user runs, npz in, store out);
- the stored fields are evaluated at the 32×32 pixel centres and scored against the 32×32 photo
  ("between-centre PSNR"); bicubic-like interpolation of the same N×N item is the reference row.

The choice per (architecture, N): the knob value of the highest between-centre PSNR among those whose fit
of the N×N pixels reaches 40 dB (fit-dataset's default target), and within 0.25 dB of that the best fit;
if none reaches 40 dB, the best fit. Writes
OUT/bandwidth.json and prints a table.

    python benchmarks/bandwidth_sweep.py --out /tmp/bw [--items 64] [--steps 300] [--fields siren,fourier]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

TRUTH = 32
GRIDS: dict[str, list[dict]] = {
    "siren": [{"omega0": w, "first_omega0": w} for w in (2, 3, 5, 8, 12, 20, 30)],
    # FINER's first-layer bias (uniform in ±first_bias_scale) widens its spectrum whatever ω₀ is.
    "finer": [{"omega0": w, "first_bias_scale": b} for w in (2, 3, 5, 8, 12, 30) for b in (0, 0.5, 2)],
    "fourier": [{"sigma": s} for s in (0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10)],
    "gauss": [{"scale": s} for s in (1, 2, 3, 5, 8, 12, 20)],
    "wire": [{"omega0": w, "scale": s} for w in (2, 5, 10, 20) for s in (2, 5, 10, 20)],
    "hashgrid": [{"max_resolution": r} for r in (2, 4, 8, 16, 32)],
    "local-global": [{"omega0": w, "first_omega0": w} for w in (2, 3, 5, 8, 12, 20, 30)],
    "miner": [{"omega0": w} for w in (0.5, 1, 2, 3, 5, 10, 30)],
    "functa": [{"omega0": w, "first_omega0": w} for w in (3, 5, 8, 12, 20, 30)],
    "spatial-functa": [{"omega0": w, "first_omega0": w} for w in (3, 5, 10, 20, 30)],
}


def grey_patches(count: int) -> np.ndarray:
    """(count, 32, 32) grey validation photos in [0, 1] (the sample's first `count` patches)."""
    from fieldlab.signals.datasets import open_source

    source = open_source(f"sample:patches:{count}")
    images = np.stack([np.asarray(source.raw(i), dtype=np.float64) for i in range(count)])
    if images.ndim == 4:  # (f, h, w, c)
        images = images.mean(axis=-1)
    lo, hi = images.min(axis=(1, 2), keepdims=True), images.max(axis=(1, 2), keepdims=True)
    return (images - lo) / np.maximum(hi - lo, 1e-8)


def area(images: np.ndarray, n: int) -> np.ndarray:
    k = images.shape[-1] // n
    return images.reshape(len(images), n, k, n, k).mean(axis=(2, 4))


def centres(n: int) -> torch.Tensor:
    """(n·n, 2) pixel centres in [-1, 1], row-major (y, x), as fieldlab's grids."""
    from fieldlab.signals import grid_coords

    box = ((0.0, 1.0), (0.0, 1.0))
    return grid_coords(box, box, (n, n))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over items of the PSNR on a [0, 1] range."""
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


def bicubic(items: np.ndarray) -> np.ndarray:
    """The reference interpolant: torch's bicubic upsampling of the N×N items to 32×32."""
    x = torch.from_numpy(items)[:, None]
    return torch.nn.functional.interpolate(x, size=(TRUTH, TRUTH), mode="bicubic", align_corners=False)[:, 0].numpy()


def fit_store(npz: Path, out: Path, field: str, knobs: dict, steps: int) -> float | None:
    """Seconds of `fieldlab fit-dataset`, or None when it refused (a fit that diverged at these knobs)."""
    from fieldlab.cli.main import main

    options = [f"--{k.replace('_', '-')}={v}" for k, v in knobs.items()]
    budget = ["--meta-steps", str(steps)] if "functa" in field else ["--steps", str(steps), "--target-psnr", "0"]
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(["fit-dataset", str(npz), "--field", field, *options, *budget, "--out", str(out), "--force",
                  "--quiet"])
        except SystemExit as stop:
            if stop.code:
                return None
    return time.perf_counter() - start


def read_store(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fields at the item's own centres (f, n, n), at the 32×32 centres (f, 32, 32)), in [0, 1]."""
    from fieldlab.learn.field_batch import FieldEvaluator
    from fieldlab.store.field_store import FieldStore

    store = FieldStore(path)
    evaluator = FieldEvaluator.from_store(store)
    params = store.read(slice(0, store.num_fields))
    with torch.no_grad():
        own = evaluator.values(params, centres(n)).float()[..., 0].numpy()
        fine = evaluator.values(params, centres(TRUTH)).float()[..., 0].numpy()
    # Stores hold values in [-1, 1].
    return (own.reshape(-1, n, n) + 1) / 2, (fine.reshape(-1, TRUTH, TRUTH) + 1) / 2


def choose(rows: list[dict]) -> dict:
    """Among the fits reaching 40 dB, the best between-centre PSNR; within 0.25 dB of it, the best fit."""
    good = [r for r in rows if r["fit_db"] >= 40.0]
    if not good:
        return max(rows, key=lambda r: r["fit_db"])
    top = max(r["between_db"] for r in good)
    return max((r for r in good if r["between_db"] >= top - 0.25), key=lambda r: r["fit_db"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sizes", default="8,16")
    parser.add_argument("--fields", default=",".join(GRIDS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    photos = grey_patches(args.items)
    results: dict = {"items": args.items, "steps": args.steps, "truth": TRUTH, "rows": [], "chosen": {},
                     "bicubic": {}}
    report = args.out / "bandwidth.json"
    for n in map(int, args.sizes.split(",")):
        items = area(photos, n)
        npz = args.out / f"val{n}.npz"
        np.savez(npz, images=(items * 255).round().astype(np.uint8))
        quantised = np.load(npz)["images"] / 255.0
        results["bicubic"][n] = psnr(np.clip(bicubic(quantised), 0, 1), photos)
        print(f"N={n}: bicubic between-centre PSNR {results['bicubic'][n]:.2f} dB", flush=True)
        for field in args.fields.split(","):
            rows = []
            for knobs in GRIDS[field]:
                store = args.out / f"{field}-{n}"
                seconds = fit_store(npz, store, field, knobs, args.steps)
                if seconds is None:
                    print(f"  {field:15s} N={n:2d} {json.dumps(knobs):40s} refused (diverged)", flush=True)
                    continue
                own, fine = read_store(store, n)
                row = {"field": field, "n": n, "knobs": knobs, "fit_db": psnr(own, quantised),
                       "between_db": psnr(np.clip(fine, 0, 1), photos), "seconds": round(seconds, 1)}
                rows.append(row)
                print(f"  {field:15s} N={n:2d} {json.dumps(knobs):40s} fit {row['fit_db']:6.2f} dB  "
                      f"between {row['between_db']:6.2f} dB  ({seconds:.0f} s)", flush=True)
            results["rows"] += rows
            best = choose(rows)
            results["chosen"].setdefault(field, {})[n] = best["knobs"]
            print(f"  -> {field} N={n}: {best['knobs']}", flush=True)
            report.write_text(json.dumps(results, indent=1))
    print(json.dumps(results["chosen"], indent=1))


if __name__ == "__main__":
    main()
