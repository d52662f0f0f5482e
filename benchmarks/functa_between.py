"""Functa between its samples (issue 20): is a meta-learned field smooth between the centres it was fitted to?

A network that reads fields at arbitrary points (DI-Net, NUFT) and was trained on SIREN fields reads a functa
store between its pixel centres too; there a functa fitted only at the centres is free to be noise. This
benchmark meta-learns functa (`fieldlab.fit.meta.MetaLearner`, the dataset defaults `fit-dataset` resolves for
N×N items, N = `--size`, 8 unless told) with the outer loss at the sample centres (`--jitter 0`, functa's own)
and at jittered points against the item's bilinear interpolation (`--jitter 1`), and reports for held-out items:

- fit: PSNR at the item's own N×N centres (what a store records);
- vs bilinear: PSNR of the field at the 32×32 centres of the same domain against bilinear interpolation of the
  field's own N×N centre values (`between_vs_bilinear`; needs no ground truth, so it runs on digits);
- vs photo (photos only): PSNR at the 32×32 centres against the 32×32 photo the item was averaged from;
- meta-learning seconds, with a same-run interleaved ratio of the two settings' step times.

Data: `sample:patches` grey photos area-averaged to N×N (never the scored digits) and `sample:digits` (8×8
only). `--seed K` seeds the meta-learning (initialisation, rates, batches); the photos are the same for every
seed. `--no-step-ratio` skips the interleaved timing (a layout sweep needs only the quality columns).

    python benchmarks/functa_between.py [--field functa] [--steps 300] [--train 512] [--test 64] [--jitters 0,1]
        [--data photos,digits] [--size 8] [--batch-size 16] [--seed 0] [--option grid_size=4] [--no-step-ratio]
        [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bandwidth_sweep import TRUTH, area, centres, grey_patches  # noqa: E402


def psnr01(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over items of the PSNR of (f, …) values in [-1, 1], on a [0, 1] range (as the bandwidth sweep)."""
    mse = ((a - b) / 2).square().reshape(len(a), -1).mean(dim=1)
    return float((10 * torch.log10(1 / mse.clamp_min(1e-12))).mean())


def between_vs_bilinear(evaluate, n: int, fine: int = TRUTH) -> float:
    """PSNR of fields at the `fine`² centres against bilinear interpolation of their own `n`² centre values.

    `evaluate(points (m, 2)) -> (f, m)` reads every field at the points (values in [-1, 1])."""
    own = evaluate(centres(n)).reshape(-1, 1, n, n)
    smooth = torch.nn.functional.interpolate(own, size=(fine, fine), mode="bilinear", align_corners=False)
    return psnr01(evaluate(centres(fine)).reshape(-1, fine, fine), smooth[:, 0])


def config_for(field: str, shape: tuple[int, int], options: dict | None = None):
    """The config `fit-dataset` resolves for grey items of `shape` (the field's item defaults), with the
    user's `options` winning over them as on the command line."""
    from types import SimpleNamespace

    from fieldlab.fit.dataset_job import resolve_dataset_config

    return resolve_dataset_config(field, options or {}, SimpleNamespace(shape=shape, channels=1))


def learn(train: torch.Tensor, jitter: float, steps: int, field: str = "functa", weight: float | None = None,
          seed: int = 0, options: dict | None = None, size: int = 8, batch_size: int = 0):
    """Meta-learn `field` on `train` (f, size², 1), items of `size`×`size` samples, `batch_size` items per
    outer step (0: MetaConfig's), the between-samples term at `weight` (None: MetaConfig's)."""
    from fieldlab.fit.meta import MetaConfig, MetaLearner

    given = {"between_weight": weight, "batch_size": batch_size or None}
    meta = MetaConfig(steps=steps, jitter=jitter, seed=seed, device="cpu",
                      **{k: v for k, v in given.items() if v is not None})
    learner = MetaLearner(config_for(field, (size, size), options), centres(size), meta)
    start = time.perf_counter()
    learner.train(train)
    return learner, time.perf_counter() - start


def scores(learner, items: torch.Tensor, truth: torch.Tensor | None, size: int = 8) -> dict:
    """fit / vs bilinear / vs photo PSNRs of the held-out `items` (f, size², 1) fitted by the inner loop."""
    latents, fit = learner.fit_latents(items)
    stack = learner.stack(latents)

    def evaluate(points):
        with torch.no_grad():
            return stack(points.expand(len(latents), -1, -1))[..., 0]

    row = {"fit_db": float(fit.mean()), "vs_bilinear_db": between_vs_bilinear(evaluate, size)}
    if truth is not None:
        row["vs_photo_db"] = psnr01(evaluate(centres(TRUTH)).clamp(-1, 1), truth.reshape(len(truth), -1))
    return row


def step_ratio(train: torch.Tensor, jitters: list[float], field: str, rounds: int = 4, steps: int = 5,
               options: dict | None = None, size: int = 8, weight: float | None = None, batch_size: int = 0) -> dict:
    """Seconds per outer step of each jitter, measured interleaved (A B A B …) in this run, with the rows'
    own weight and batch."""
    learners = {j: learn(train, j, 1, field, weight, options=options, size=size, batch_size=batch_size)[0]
                for j in jitters}
    seconds = {j: 0.0 for j in jitters}
    for _ in range(rounds):
        for j in jitters:
            start = time.perf_counter()
            learners[j].train(train, steps=steps)
            seconds[j] += time.perf_counter() - start
    return {str(j): seconds[j] / (rounds * steps) for j in jitters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--test", type=int, default=64)
    parser.add_argument("--jitters", default="0,1")
    parser.add_argument("--data", default="photos,digits")
    parser.add_argument("--field", default="functa", choices=("functa", "spatial_functa"))
    parser.add_argument("--weight", type=float, default=None,
                        help="the between-samples term's weight (default: MetaConfig's, fit-dataset's)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a field option over the item defaults, e.g. grid_size=4 (repeatable)")
    parser.add_argument("--size", type=int, default=8, help="photos are area-averaged to SIZE×SIZE items")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="items per outer step (0: MetaConfig's; 4 at --size 16 keeps 8×8's points per step)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the meta-learning (the photos stay the same)")
    parser.add_argument("--step-ratio", action=argparse.BooleanOptionalAction, default=True,
                        help="time the jitters' outer steps interleaved after the rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a shared CPU)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.size < 2 or TRUTH % args.size:
        parser.error(f"--size must divide the {TRUTH}×{TRUTH} photos the fields are scored against, got {args.size}")
    if "digits" in args.data and args.size != 8:
        parser.error("--data digits has 8×8 items only: use --size 8 with it")
    torch.set_num_threads(args.threads)
    jitters = [float(j) for j in args.jitters.split(",")]
    if any("=" not in o for o in args.option):
        parser.error(f"--option takes NAME=VALUE, got {next(o for o in args.option if '=' not in o)!r}")
    # the field's own option parsing (fit-dataset's) reads the words: grid_size=4, readout=bilinear
    options = dict(o.split("=", 1) for o in args.option)
    results: dict = {"steps": args.steps, "batch_size": args.batch_size, "size": args.size, "seed": args.seed,
                     "rows": []}
    data = {}
    if "photos" in args.data:
        photos = grey_patches(args.train + args.test)
        items = torch.from_numpy(area(photos, args.size) * 2 - 1).float().reshape(len(photos), args.size ** 2, 1)
        truth = torch.from_numpy(photos[args.train:] * 2 - 1).float()
        data["photos"] = (items[:args.train], items[args.train:], truth)
    if "digits" in args.data:
        from sklearn.datasets import load_digits

        digits = torch.from_numpy(load_digits().images / 16 * 2 - 1).float().reshape(-1, 64, 1)
        data["digits"] = (digits[:-args.test], digits[-args.test:], None)
    for name, (train, test, truth) in data.items():
        for jitter in jitters:
            learner, seconds = learn(train, jitter, args.steps, args.field, args.weight, args.seed, options, args.size,
                                     args.batch_size)
            row = {"field": args.field, **options, "data": name, "size": args.size, "seed": args.seed,
                   "jitter": jitter, "weight": learner.meta.between_weight, "meta_seconds": round(seconds, 1),
                   **scores(learner, test, truth, args.size)}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    if args.step_ratio:  # against functa's own (jitter 0) in the same run, whatever rows were asked for
        results["seconds_per_step"] = step_ratio(data[next(iter(data))][0], sorted({0.0, *jitters}), args.field,
                                                 options=options, size=args.size, weight=args.weight,
                                                 batch_size=args.batch_size)
        print(json.dumps(results["seconds_per_step"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
