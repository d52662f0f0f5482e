"""functa and spatial functa on 32×32×3 natural patches: PSNR after 3 inner steps, and latent fitting speed.

    python benchmarks/functa.py --out results.json [--functa-seconds 90 --spatial-seconds 18]

Patches are seeded random 32×32 crops of scikit-image's photos (astronaut, coffee, chelsea, rocket,
hubble_deep_field, immunohistochemistry); training and held-out crops come from different seeds (the
same photos: there are only six). Meta-training has a wall-clock budget per model: the budget, the
steps it bought and the held-out PSNR (the same 3-step inner loop, from a zero latent) are reported.

Measured: (1) functa, 1,024-dim latent: a short outer-lr sweep, then one longer run with the best lr;
(2) spatial functa, PSNR vs latent size (S×S×C) for the nearest readout, and one bilinear run;
(3) building a functaset: the batched inner loop vs a plain reference that fits one datum at a time
(the official writer's loop), same trained network, as fields per second and a ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fieldlab.fields import make_config  # noqa: E402
from fieldlab.fit.meta import MetaConfig, MetaLearner  # noqa: E402
from fieldlab.signals._signal import grid_coords  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def natural_patches(count: int, seed: int, size: int = 32) -> torch.Tensor:
    """`count` random size×size RGB crops as values (count, size², 3) in [-1, 1]."""
    import skimage.data

    photos = [getattr(skimage.data, name)()[..., :3] for name in PHOTOS]
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        top, left = rng.integers(photo.shape[0] - size + 1), rng.integers(photo.shape[1] - size + 1)
        out[i] = photo[top:top + size, left:left + size]
    return torch.from_numpy(out).float().div(255).mul(2).sub(1).reshape(count, size * size, 3)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def meta_train(config, coords, train, test, *, lr, seconds, batch_size, device, log_every=100):
    meta = MetaConfig(steps=10**9, batch_size=batch_size, lr=lr, warmup=100, clip_norm=1.0, device=device,
                      fit_batch_size=250)
    learner = MetaLearner(config, coords, meta)
    history = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        psnr = learner.step(learner.sample(train))
        if learner.step_count % log_every == 0:
            history.append((learner.step_count, round(psnr, 2)))
    sync()
    elapsed = time.perf_counter() - start
    _, held_out = learner.fit_latents(test)
    return learner, {
        "field": config.name, "config": config.to_dict(), "latent_size": int(np.prod(config.latent_shape())),
        "lr": lr, "batch_size": batch_size, "seconds": round(elapsed, 1), "steps": learner.step_count,
        "skipped_steps": learner.skipped, "train_psnr_last": history[-1][1] if history else None,
        "history": history, "heldout_psnr_3_steps": round(float(held_out.mean()), 2),
        "heldout_psnr_min": round(float(held_out.min()), 2),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else 0,
    }


def functaset_speed(learner, values, reference_count):
    """Fields per second of the batched inner loop vs one datum at a time (same network, same result)."""
    learner.fit_latents(values[:250])  # warm-up
    sync()
    start = time.perf_counter()
    batched, _ = learner.fit_latents(values, batch_size=250)
    sync()
    batched_rate = len(values) / (time.perf_counter() - start)
    start = time.perf_counter()
    single, _ = learner.fit_latents(values[:reference_count], batch_size=1)
    sync()
    single_rate = reference_count / (time.perf_counter() - start)
    agree = float((batched[:reference_count] - single).abs().max())
    return {"batched_fields_per_s": round(batched_rate, 1), "one_at_a_time_fields_per_s": round(single_rate, 1),
            "ratio": round(batched_rate / single_rate, 1), "max_latent_difference": agree}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("functa_results.json"))
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sweep-seconds", type=float, default=15)
    parser.add_argument("--functa-seconds", type=float, default=90)
    parser.add_argument("--spatial-seconds", type=float, default=18)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--lrs", default="1e-4,3e-4,1e-3")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_float32_matmul_precision("high")  # TF32 matmuls; first layers stay exact (fieldlab._precision)
    train, test = natural_patches(args.train, seed=0), natural_patches(args.test, seed=1)
    coords = grid_coords([(0, 32), (0, 32)], [(0, 32), (0, 32)], (32, 32))
    results = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
               "train_patches": args.train, "test_patches": args.test, "runs": []}

    def record(entry):
        results["runs"].append(entry)
        print(json.dumps({k: v for k, v in entry.items() if k not in ("config", "history")}), flush=True)
        args.out.write_text(json.dumps(results, indent=1))

    functa = make_config("functa", in_dim=2, out_dim=3, hidden_dim=args.width, num_layers=6, latent_dim=1024)
    sweep = []
    for lr in (float(v) for v in args.lrs.split(",")):
        _, entry = meta_train(functa, coords, train, test, lr=lr, seconds=args.sweep_seconds,
                              batch_size=args.batch_size, device=device)
        record({"phase": "lr sweep", **entry})
        sweep.append((entry["heldout_psnr_3_steps"], lr))
    best_lr = max(sweep)[1]
    learner, entry = meta_train(functa, coords, train, test, lr=best_lr, seconds=args.functa_seconds,
                                batch_size=args.batch_size, device=device)
    record({"phase": "functa 1024", **entry})
    results["functaset_speed"] = functaset_speed(learner, test, reference_count=50)
    print(json.dumps(results["functaset_speed"]), flush=True)
    for grid, channels, readout in ((4, 16, "nearest"), (8, 16, "nearest"), (8, 64, "nearest"), (8, 16, "bilinear")):
        spatial = make_config("spatial_functa", in_dim=2, out_dim=3, hidden_dim=args.width, num_layers=6,
                              grid_size=grid, latent_channels=channels, readout=readout).adapt((32, 32))
        _, entry = meta_train(spatial, coords, train, test, lr=best_lr, seconds=args.spatial_seconds,
                              batch_size=args.batch_size, device=device)
        record({"phase": "spatial functa", "readout": readout, **entry})
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
