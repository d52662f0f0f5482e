"""Local-Global benchmark: SIREN vs `local` vs `local-global` at equal parameters, steps and samples per step.

    python benchmarks/local_global.py --prepare ../shared/data --data .bench_lg      # once, here
    python benchmarks/local_global.py --data .bench_lg --out lg.json                  # on the GPU

`--data` holds `natural512.npy` (the 16 natural images, 16×512×512×3 uint8) and `bach.npy` (bach.wav's samples).
Reported per signal and method: PSNR (prediction clamped to the value range, full resolution, the
standard 10·log10(peak²/MSE)) every `--eval-every` steps, steps per second (synchronised, evaluation
excluded, after one warm-up step), and fitting seconds to reach each PSNR threshold. Every method
uses full-batch Adam with its field's tuned learning rate and the same exponential decay.

The plain reference for speed is the original code's layout: partitions that divide the grid, points
pre-arranged once as (p, n/p, d) and every layer a dense bmm, with no routing; its ratio to the
routed path shows what routing arbitrary points costs. Crop and extend are timed on a 2K image field.
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
from fieldlab.fit import FitConfig, Fitter, psnr_from_mse  # noqa: E402
from fieldlab.signals import Signal  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
THRESHOLDS = {"image": (25.0, 30.0, 35.0), "audio": (30.0, 40.0, 50.0), "video": (25.0, 30.0, 35.0)}
VIDEO_BATCH = 2**18
"""Voxels per step for the video (15.7 M of them do not fit one full batch of a 3M-parameter SIREN)."""


def prepare(source: Path, data: Path) -> None:
    import imageio.v3 as iio

    data.mkdir(parents=True, exist_ok=True)
    pngs = sorted((source / "images" / "natural512").glob("*.png"))
    np.save(data / "natural512.npy", np.stack([iio.imread(p)[..., :3] for p in pngs]))
    from fieldlab.signals import load_signal  # soundfile is needed here, not on the GPU machine

    bach = load_signal(str(source / "audio" / "bach.wav"))
    np.save(data / "bach.npy", bach.info.normalization.decode(bach.values))


def configs(signal: Signal, params: int, kind: str) -> dict:
    """The three methods sized to `params` (LG: 16×16 partitions for images, 32 for audio, as the paper)."""
    extra = {"first_omega0": 3000.0} if kind == "audio" else {}  # SIREN's audio setting for every method
    parts = {"audio": (32,), "image": (16, 16), "video": (4, 8, 8)}[kind]
    d, c = signal.info.in_dim, signal.info.channels
    return {
        "siren": make_config("siren", in_dim=d, out_dim=c, **extra).adapt(signal.shape).with_params(params),
        "local": make_config("local-global", in_dim=d, out_dim=c, mode="local", partitions=parts,
                             **extra).adapt(signal.shape).with_params(params),
        "local-global": make_config("local-global", in_dim=d, out_dim=c, partitions=parts,
                                    **extra).adapt(signal.shape).with_params(params),
    }


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def run(signal: Signal, config, steps: int, eval_every: int, seed: int, kind: str) -> dict:
    torch.manual_seed(seed)
    field = config.build()
    batch = VIDEO_BATCH if kind == "video" else 0
    fitter = Fitter(field, signal.coords(), signal.flat_values(),
                    FitConfig(steps=steps, device=DEVICE, seed=seed, batch_size=batch),
                    lr=type(config).lr, betas=type(config).adam_betas, eps=type(config).adam_eps)
    fitter.step()  # warm-up (allocator, kernels): not timed
    sync()
    fitter.seconds, fitter._tick = 0.0, time.perf_counter()
    curve, reached = {}, {}
    while fitter.step_count < steps:
        fitter.step()
        if fitter.step_count % eval_every == 0 or fitter.step_count == steps:
            with fitter.paused():
                prediction = fitter.predict().clamp(-1, 1)
                value = psnr_from_mse(float((prediction - fitter.values).square().mean()))
            curve[fitter.step_count] = round(value, 3)
            for t in THRESHOLDS[kind]:
                if value >= t and t not in reached:
                    reached[t] = round(fitter.seconds, 3)
    seconds = fitter.elapsed()
    return {"psnr": curve[steps], "curve": curve, "seconds": round(seconds, 3),
            "steps_per_s": round((steps - 1) / seconds, 2), "seconds_to": reached, "params": config.num_params()}


def dense_reference_speed(signal: Signal, config, steps: int = 50) -> float:
    """Steps per second of the original layout: points pre-arranged per partition, no routing per step."""
    module = config.build().to(DEVICE)
    coords, values = signal.coords().to(DEVICE), signal.flat_values().to(DEVICE)
    slot, _ = module.route(coords)
    p = module.num_parts
    order = torch.argsort(slot, stable=True)[: p * (coords.shape[0] // p)]  # audio: truncated, as the original
    x, y = coords[order].view(p, -1, coords.shape[1]), values[order].view(p, -1, values.shape[1])
    tiles = torch.arange(p, device=DEVICE)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-4, fused=DEVICE == "cuda")

    def step():
        loss = (module._tiles(x, tiles) - y).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    sync()
    tick = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return round(steps / (time.perf_counter() - tick), 2)


def crop_extend_2k() -> dict:
    """Seconds to crop a 2048² Local-Global field (64×64 partitions) to 2048×1536 and to grow it to 2048×2560."""
    from fieldlab.edit.crop import crop_field
    from fieldlab.store import StoredField

    config = make_config("local-global", in_dim=2, out_dim=3, partition_size=(32,)).adapt((2048, 2048))
    signal = Signal.from_array(np.zeros((2048, 2048, 3), np.uint8), kind="image")
    stored = StoredField(config.build(), config, signal.info, {})
    tick = time.perf_counter()
    cropped, state, _ = crop_field(stored, keep=((0, 2048), (0, 1536)))
    module = cropped.build()
    module.load_state_dict(state)
    crop_s = time.perf_counter() - tick
    tick = time.perf_counter()
    grown, grown_state, new = config.extended(dict(stored.module.state_dict()), (2048, 2560))
    module = grown.build()
    module.load_state_dict(grown_state)
    extend_s = time.perf_counter() - tick
    return {"params": config.num_params(), "crop_seconds": round(crop_s, 3), "cropped_params": cropped.num_params(),
            "extend_setup_seconds": round(extend_s, 3), "new_partitions": len(new)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(".bench_lg"))
    parser.add_argument("--prepare", type=Path, help="make --data from this shared data folder")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--params", type=int, default=200_000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--audio", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--video", type=Path, help="an .npz of frames (benchmarks/fit_modalities.py --prepare makes "
                        "gargoyle60.npz): fitted at 3M parameters, --video-steps mini-batches of 2^18 voxels")
    parser.add_argument("--video-steps", type=int, default=300)
    parser.add_argument("--video-params", type=int, default=3_000_000)
    parser.add_argument("--out", type=Path, default=Path("local_global.json"))
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.data)
        return
    results: dict = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
                     "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()}, "runs": []}

    def save():
        args.out.write_text(json.dumps(results, indent=1))

    if args.images or args.audio:
        results["crop_extend_2k"] = crop_extend_2k()
        print("crop/extend 2K:", results["crop_extend_2k"], flush=True)
    signals = [("natural%02d" % i, "image", Signal.from_array(im, kind="image"))
               for i, im in enumerate(np.load(args.data / "natural512.npy")[: args.images])] if args.images else []
    if args.audio:
        signals.append(("bach", "audio", Signal.from_array(np.load(args.data / "bach.npy"), kind="audio")))
    if args.video:
        frames = np.load(args.video)["frames"]
        signals.append(("gargoyle", "video", Signal.from_array(frames, kind="video", extra={"fps": 24.0})))
    for name, kind, signal in signals:
        methods = configs(signal, args.video_params if kind == "video" else args.params, kind)
        steps = args.video_steps if kind == "video" else args.steps
        if name in ("natural00", "bach"):
            results.setdefault("dense_reference", {})[name] = {
                "routed_steps_per_s": None, "dense_steps_per_s": dense_reference_speed(signal, methods["local-global"])}
        for method, config in methods.items():
            for seed in range(args.seeds):
                r = run(signal, config, steps, steps if kind == "video" else args.eval_every, seed, kind)
                r.update(signal=name, kind=kind, method=method, seed=seed)
                results["runs"].append(r)
                print(f"{name} {method} seed {seed}: {r['psnr']:.2f} dB, {r['steps_per_s']:.1f} steps/s, "
                      f"{r['params']:,} params, to {r['seconds_to']}", flush=True)
                save()
    summarise(results)
    save()


def summarise(results: dict) -> None:
    """Mean PSNR and speed per kind and method, and LG's gain and speed-up over SIREN."""
    summary = {}
    for kind in ("image", "audio", "video"):
        runs = [r for r in results["runs"] if r["kind"] == kind]
        if not runs:
            continue
        by = {m: [r for r in runs if r["method"] == m] for m in ("siren", "local", "local-global")}
        summary[kind] = {m: {"psnr": round(float(np.mean([r["psnr"] for r in rs])), 3),
                             "steps_per_s": round(float(np.mean([r["steps_per_s"] for r in rs])), 2),
                             "params": rs[0]["params"], "n": len(rs)} for m, rs in by.items() if rs}
        s, lg = summary[kind].get("siren"), summary[kind].get("local-global")
        if s and lg:
            summary[kind]["lg_minus_siren_db"] = round(lg["psnr"] - s["psnr"], 3)
            summary[kind]["lg_speedup"] = round(lg["steps_per_s"] / s["steps_per_s"], 2)
    for name, ref in results.get("dense_reference", {}).items():
        lg_runs = [r for r in results["runs"] if r["signal"] == name and r["method"] == "local-global"]
        if lg_runs:
            ref["routed_steps_per_s"] = lg_runs[0]["steps_per_s"]
    results["summary"] = summary
    print(json.dumps(summary, indent=1), flush=True)


if __name__ == "__main__":
    main()
