"""Image fitting benchmark: every architecture at about 200k parameters, and a naive SIREN reference.

    python benchmarks/fit_images.py --data .bench_data --out results.json

`--data` holds `natural512.npy` (16×512×512×3 uint8: the natural-image set of the Fourier-features
paper, `../shared/data/images/natural512/`) and `astronaut.npy` (scikit-image's astronaut); make them
with `python benchmarks/fit_images.py --prepare ../shared/data/images/natural512 --data .bench_data`.

Reported per architecture: PSNR at 500 / 1,000 / 2,000 steps on astronaut and mean over the 16 natural
images (fitted together through the batched path), steps per second, fitting seconds to reach 30 / 35 /
40 dB, peak GPU memory and achieved TFLOP/s (FLOPs counted by PyTorch's FlopCounterMode on one step).
The naive reference is a plain nn.Sequential SIREN, fp32, eager, full batch, fitted one image at a
time in the same run with the same initialisation and learning-rate schedule; speed is reported as a ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fieldlab.fields import FieldStack, list_fields, make_config  # noqa: E402
from fieldlab.fit import FitConfig, Fitter, psnr_from_mse  # noqa: E402
from fieldlab.signals import Signal  # noqa: E402

torch._dynamo.config.cache_size_limit = 64  # many fits with different options in one process

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU only for a smoke test of the script
MILESTONES = (500, 1000, 2000)
THRESHOLDS = (30.0, 35.0, 40.0)
ANCHORS_1000 = {"fourier": 32.1, "siren": 33.8, "gauss": 32.3, "wire": 25.2, "finer": 36.6, "hashgrid": 37.0}


def prepare(source: Path, data: Path) -> None:
    import imageio.v3 as iio
    import skimage.data

    data.mkdir(parents=True, exist_ok=True)
    images = np.stack([iio.imread(p)[..., :3] for p in sorted(source.glob("*.png"))])
    np.save(data / "natural512.npy", images)
    np.save(data / "astronaut.npy", skimage.data.astronaut())


def flops_per_step(module: nn.Module, coords: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        module(coords).square().mean().backward()
    module.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def run_fitter(fitter: Fitter, steps: int, eval_every: int) -> dict:
    """Step `fitter`, evaluating every `eval_every` steps outside the timed region."""
    psnrs_at, reached = {}, {}
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    while fitter.step_count < steps:
        fitter.step()
        s = fitter.step_count
        if s % eval_every == 0 or s in MILESTONES:
            with fitter.paused():
                error = (fitter.predict() - fitter.values).square().mean(dim=(-2, -1)).reshape(-1)
                psnr = [psnr_from_mse(float(e)) for e in error]
                for t in THRESHOLDS:
                    for i, p in enumerate(psnr):
                        if p >= t and (t, i) not in reached:
                            reached[(t, i)] = fitter.seconds
                if s in MILESTONES:
                    psnrs_at[s] = float(np.mean(psnr))
    seconds = fitter.elapsed()
    n = len(psnr)
    return {
        "psnr": psnrs_at, "seconds": seconds, "steps_per_s": steps / seconds,
        "compile_seconds": fitter.compile_seconds,
        "seconds_to": {t: (float(np.mean([reached[(t, i)] for i in range(n)])) if all((t, i) in reached for i in range(n)) else None)
                       for t in THRESHOLDS},
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0,
    }


def fieldlab_run(name: str, images: np.ndarray, args, precision: str, compile_: bool) -> dict:
    signals = [Signal.from_array(im, kind="image") for im in images]
    config = make_config(name, in_dim=2, out_dim=3).adapt(signals[0].shape).with_params(args.params)
    torch.manual_seed(0)
    coords = signals[0].coords()
    fit_config = FitConfig(steps=args.steps, device=DEVICE, precision=precision, compile=compile_)
    lr, betas, eps = type(config).lr, type(config).adam_betas, type(config).adam_eps
    if len(signals) == 1:
        field, c, v = config.build(), coords, signals[0].flat_values()
    else:
        field = FieldStack.from_config(config, len(signals))
        c, v = coords.expand(len(signals), -1, -1), torch.stack([s.flat_values() for s in signals])
    fitter = Fitter(field, c, v, fit_config, lr=lr, betas=betas, eps=eps)
    flops = flops_per_step(fitter.field, fitter.coords)
    result = run_fitter(fitter, args.steps, args.eval_every)
    result.update(params=config.num_params(), images=len(signals), precision=precision, compile=compile_,
                  tflops=flops * result["steps_per_s"] / 1e12, config=config.to_dict())
    return result


class Sine(nn.Module):
    def forward(self, x):
        return torch.sin(30.0 * x)


def naive_run(image: np.ndarray, args) -> dict:
    """A plain SIREN: nn.Sequential, fp32, eager, full batch, one image; same init as fieldlab's."""
    signal = Signal.from_array(image, kind="image")
    config = make_config("siren", in_dim=2, out_dim=3).with_params(args.params)
    torch.manual_seed(0)
    ours = config.build()
    layers = []
    for i, linear in enumerate(ours.layers):
        layers += [linear] if i == len(ours.layers) - 1 else [linear, Sine()]
    net = nn.Sequential(*layers).to(DEVICE)
    torch.backends.cuda.matmul.allow_tf32 = False
    coords, values = signal.coords().to(DEVICE), signal.flat_values().to(DEVICE)
    opt = torch.optim.Adam(net.parameters(), lr=type(config).lr)
    decay = math.log(0.1) / args.steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: math.exp(decay * s))
    psnr_at, fit_seconds = {}, 0.0
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    sync()
    tick = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss = (net(coords) - values).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step in MILESTONES:
            sync()
            fit_seconds += time.perf_counter() - tick
            with torch.no_grad():
                psnr_at[step] = psnr_from_mse(float((net(coords) - values).square().mean()))
            sync()
            tick = time.perf_counter()
    return {"psnr": psnr_at, "seconds": fit_seconds, "steps_per_s": args.steps / fit_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(".bench_data"))
    parser.add_argument("--prepare", type=Path, help="make --data from this folder of natural512 PNGs")
    parser.add_argument("--fields", default="all")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--params", type=int, default=200_000)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--natural", type=int, default=16, help="natural images to fit (0 skips the set)")
    parser.add_argument("--group", type=int, default=4, help="natural images fitted together in one stack")
    parser.add_argument("--naive-images", type=int, default=2, help="natural images the naive reference fits too")
    parser.add_argument("--siren-modes", default="tf32,bf16", help="SIREN precisions compared with the reference")
    parser.add_argument("--skip-reference", action="store_true", help="skip the naive reference and SIREN modes")
    parser.add_argument("--out", type=Path, default=Path("fit_images.json"))
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.data)
        return
    global MILESTONES
    MILESTONES = tuple(m for m in MILESTONES if m < args.steps) + (args.steps,)
    astronaut = np.load(args.data / "astronaut.npy")[None]
    natural = np.load(args.data / "natural512.npy")[: args.natural]
    names = [] if args.fields == "none" else list_fields() if args.fields == "all" else args.fields.split(",")
    results: dict = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__,
                     "args": {k: str(v) for k, v in vars(args).items()}}

    def save():
        args.out.write_text(json.dumps(results, indent=1, default=str))

    if not args.skip_reference:
        reference(astronaut, natural[: args.naive_images], args, results)
        save()
    for name in names:
        field_run(name, astronaut, natural, args, results)
        save()


def reference(astronaut, natural, args, results) -> None:
    """The naive SIREN, then fieldlab's SIREN in each precision on the same images: the speed ratio."""
    images = [astronaut[0], *natural]
    naive = [naive_run(im, args) for im in images]
    results["naive"] = naive
    print(f"naive SIREN fp32 eager: {naive[0]['steps_per_s']:.1f} steps/s on astronaut; PSNR@{args.steps} "
          f"{[round(r['psnr'][args.steps], 2) for r in naive]}", flush=True)
    for mode in [m for m in args.siren_modes.split(",") if m]:
        r = [fieldlab_run("siren", im[None], args, mode, not args.no_compile) for im in images]
        results[f"siren_{mode}"] = r
        ratio = [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(r, naive)]
        delta = [round(a["psnr"][args.steps] - b["psnr"][args.steps], 3) for a, b in zip(r, naive)]
        print(f"fieldlab SIREN {mode}{'+compile' if not args.no_compile else ''}: {r[0]['steps_per_s']:.1f} steps/s = "
              f"{_slash(ratio)}x naive; PSNR@{args.steps} minus naive's: {delta}; compile {r[0]['compile_seconds']:.1f} s",
              flush=True)


def field_run(name, astronaut, natural, args, results) -> None:
    """One architecture on astronaut and, in stacks, on the natural images."""
    a = fieldlab_run(name, astronaut, args, args.precision, not args.no_compile)
    results[f"{name}_astronaut"] = a
    line = (f"{name:<9} {a['params']:>8,} astronaut PSNR@500/1000/2000 {_slash(a['psnr'].get(m) for m in MILESTONES)} "
            f"(anchor@1000 {ANCHORS_1000.get(name)}) {a['steps_per_s']:.0f} steps/s {a['tflops']:.1f} TFLOP/s "
            f"peak {a['peak_gib']:.2f} GiB; s to 30/35/40 dB {_slash(a['seconds_to'].values())}")
    if len(natural):
        groups = [fieldlab_run(name, natural[i:i + args.group], args, args.precision, not args.no_compile)
                  for i in range(0, len(natural), args.group)]
        b = _merge(groups)
        results[f"{name}_natural"] = b
        per_image = [None if v is None else v / b["group"] for v in b["seconds_to"].values()]
        line += (f" | natural x{len(natural)} (stacks of {b['group']}) PSNR@500/1000/2000 "
                 f"{_slash(b['psnr'].get(m) for m in MILESTONES)} {b['image_steps_per_s']:.0f} image-steps/s "
                 f"{b['tflops']:.1f} TFLOP/s peak {b['peak_gib']:.1f} GiB; s per image to 30/35/40 dB {_slash(per_image)}")
    print(line, flush=True)


def _merge(groups: list[dict]) -> dict:
    """Stacks of images fitted one after another, as one result: PSNR means weighted by images."""
    images = sum(g["images"] for g in groups)
    seconds = sum(g["seconds"] for g in groups)
    steps = groups[0]["steps_per_s"] * groups[0]["seconds"]
    to = {t: None if any(g["seconds_to"][t] is None for g in groups) else
          sum(g["seconds_to"][t] * g["images"] for g in groups) / images for t in THRESHOLDS}
    return {
        "psnr": {m: sum(g["psnr"][m] * g["images"] for g in groups) / images for m in groups[0]["psnr"]},
        "seconds": seconds, "steps_per_s": steps * len(groups) / seconds,
        "image_steps_per_s": steps * images / seconds, "seconds_to": to, "images": images,
        "peak_gib": max(g["peak_gib"] for g in groups), "tflops": float(np.mean([g["tflops"] for g in groups])),
        "params": groups[0]["params"], "group": groups[0]["images"],
    }


def _slash(values) -> str:
    return "/".join("-" if v is None else f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
