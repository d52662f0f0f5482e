"""MINER against SIREN and hashgrid at the same time budget: DIV2K 0882 at full size and upscaled to
4096² and 8192², and the bunny's occupancy at 512³ (issue 5). Prints one JSON line per run.

    python benchmarks/miner.py --data DIR [--sizes full,4096,8192] [--seconds 20] [--mesh] [--mesh-file F]
                               [--memory-sizes 4096,8192,16384] [--device-budget-gib 1.5] [--precisions fp32,tf32,bf16]
                               [--sweep] [--kernel-sizes full,4096] [--kernel-precisions fp32,bf16]
                               [--kernel-steps 600] [--mesh-kernel auto|fused|reference] [--out FILE]

The mesh may be a vertices/faces .npz (benchmarks/fit_modalities.py --prepare writes DIR/bunny.npz), so
the GPU machine needs no trimesh; `--sizes ""` runs the mesh alone. `--mesh-hidden` and `--mesh-stop-mse`
take comma lists: every combination is fitted, on one set of grid labels.

`--memory-sizes`: MINER alone at each size, resident (no budget; then under the --device-budget, which plans
smaller chunks) and streaming under the same budget; at the first size also each of --precisions. PSNR is
computed on the GPU in slabs of rows (no SSIM: at 16384² it would take minutes on the CPU).
`--sweep`: the option combinations of issue 5 (sine/gauss, positional encoding, parent init, relative
thresholds) on the full DIV2K image, each with --sweep-seconds.
`--kernel-sizes`: the blocks stepped by autograd and by the fused Triton kernel, taking turns, at the same
steps on each size and precision (`compare_kernels`); on a CPU, TRITON_INTERPRET=1 runs the kernel as a smoke test.

Upscaling: Lanczos (Pillow) of the 2040×1356 image to a square (the aspect ratio is stretched), so the
large images are smooth at the pixel scale, like the MINER_pl Pluto table they are compared with.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from fieldlab.fields import make_config
from fieldlab.fit import FitConfig, fit
from fieldlab.fit import miner as M
from fieldlab.fit.miner_place import data_bytes
from fieldlab.signals import Signal


def image(path: Path, size: str) -> Signal:
    from PIL import Image

    picture = Image.open(path).convert("RGB")
    if size != "full":
        picture = picture.resize((int(size), int(size)), Image.LANCZOS)
    return Signal.from_array(np.asarray(picture), kind="image", source=f"{path.name}@{size}")


@torch.no_grad()
def psnr_in_slabs(model: torch.nn.Module, signal: Signal, rows: int = 0) -> float:
    """PSNR of the field at every pixel, evaluated on its device a slab of rows at a time."""
    from fieldlab.fit.metrics import psnr_from_mse
    from fieldlab.signals import grid_coords

    (h, w), device = signal.shape, next(model.parameters()).device
    rows = rows or max(1, 2**22 // w)
    error = 0.0
    for i in range(0, h, rows):
        n = min(rows, h - i)
        coords = grid_coords(signal.info.domain, [(i, i + n), (0.0, float(w))], (n, w)).to(device)
        target = signal.values[i:i + n].reshape(n * w, -1).to(device)
        error += float((model(coords) - target).double().square().sum())
    return psnr_from_mse(error / signal.values.numel())


def run_memory(signal: Signal, scales: int, seconds: float, device: str, **options) -> dict:
    """MINER alone: train seconds, peak device memory, PSNR (in slabs), blocks; `options` are MinerConfig's
    or MinerTrainConfig's."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    precision = options.pop("precision", "fp32")
    kernel, steps = options.pop("kernel", "auto"), options.pop("steps", 2000)
    names = {f.name for f in dataclasses.fields(M.MinerTrainConfig)}
    train = M.MinerTrainConfig(prune_mse=5e-5, stop_mse=3e-5, **{k: v for k, v in options.items() if k in names})
    config = make_config("miner", in_dim=2, out_dim=3, scales=scales,
                         **{k: v for k, v in options.items() if k not in names})
    model, stats = M.fit_pyramid(signal.values, config, FitConfig(steps=steps, max_seconds=seconds, device=device,
                                                                   precision=precision, kernel=kernel), train=train)
    tick = time.perf_counter()
    quality = psnr_in_slabs(model, signal)
    return {"psnr": round(quality, 3), "seconds": round(stats.seconds, 2), "eval_seconds": round(time.perf_counter() - tick, 1),
            "precision": precision, "streaming": stats.streaming,
            "budget_gib": None if stats.device_budget_bytes is None else round(stats.device_budget_bytes / 2**30, 2),
            "peak_gib": None if stats.peak_memory_bytes is None else round(stats.peak_memory_bytes / 2**30, 3),
            "kernel": stats.kernel, "retired": stats.retired_per_scale,
            "params": sum(p.numel() for p in model.parameters()), "blocks": stats.blocks_per_scale,
            "max_target_blocks_on_device": stats.max_target_blocks_on_device, "steps": stats.steps}


SCALES = {"full": 3, "4096": 4, "8192": 5, "16384": 6}

SWEEP = {
    "default (sine, no PE, no parent init, absolute)": {},
    "gauss": {"activation": "gauss"},
    "sine + PE 4": {"frequencies": 4},
    "gauss + PE 4 (MINER_pl)": {"activation": "gauss", "frequencies": 4},
    "parent init": {"parent_init": True},
    "relative thresholds": {"threshold": "relative"},
    "parent init + relative (official)": {"parent_init": True, "threshold": "relative"},
}


def compare_kernels(data: Path, sizes: list[str], precisions: list[str], steps: int, repeats: int, device: str,
                    emit, blocks: list[str] = ()) -> None:
    """MINER's blocks stepped by autograd (reference) and by the fused kernel on the same image, steps and
    draws, taking turns `repeats` times: fit seconds (the whole pyramid: residual passes, steps and
    retirement checks), PSNR, and the ratio of the best seconds. `blocks`: also the kernel at these
    POINTSxWARPS blocks instead of `default_block`'s."""
    from fieldlab.kernels import fused as fused_module

    default_block = fused_module.default_block
    variants = ["reference", "fused"] + [f"fused@{b}" for b in blocks]
    for size in sizes:
        signal = image(data / "div2k_0882.png", size)
        for precision in precisions:
            seconds = {v: [] for v in variants}
            for repeat in range(repeats):
                for variant in variants:
                    kernel, _, block = variant.partition("@")
                    if block:
                        points, warps = (int(v) for v in block.split("x"))
                        fused_module.default_block = lambda spec, precision: (points, warps)
                    try:
                        row = run_memory(signal, SCALES.get(size, 4), 0.0, device, precision=precision,
                                         kernel=kernel, steps=steps)
                    finally:
                        fused_module.default_block = default_block
                    seconds[variant].append(row["seconds"])
                    emit({"kernels": size, "variant": variant, "repeat": repeat, **row})
            emit({"kernels": size, "precision": precision, "steps": steps,
                  **{f"speedup {v}": round(min(seconds["reference"]) / min(seconds[v]), 2) for v in variants[1:]}})
        del signal


def peak() -> int:
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def run_miner(signal: Signal, seconds: float, options: dict) -> dict:
    torch.cuda.reset_peak_memory_stats()
    config = make_config("miner", in_dim=2, out_dim=3, **options)
    result = M.fit(signal, config, FitConfig(steps=2000, max_seconds=seconds, device="cuda"))
    m = result.metrics
    return {"field": "miner", "psnr": m["psnr"], "seconds": m["seconds"], "params": m["params"],
            "peak_gib": m["peak_memory_bytes"] / 2**30, "blocks": m["blocks_per_scale"],
            "blocks_total": m["blocks_total_per_scale"]}


def run_baseline(name: str, signal: Signal, seconds: float) -> dict:
    torch.cuda.reset_peak_memory_stats()
    config = make_config(name, in_dim=2, out_dim=3).adapt(signal.shape)
    tick = time.perf_counter()
    result = fit(signal, config, FitConfig(steps=10**6, max_seconds=seconds, batch_size=2**18, device="cuda",
                                           precision="tf32"))
    m = result.metrics
    return {"field": name, "psnr": m["psnr"], "seconds": m["seconds"], "steps": m["steps"], "params": m["params"],
            "peak_gib": peak() / 2**30, "wall": round(time.perf_counter() - tick, 1)}


def run_mesh(path: Path, seconds: float, steps: int = 600, hidden: str = "8", baselines: bool = True,
             stop_mse: str = "2e-4", resolution: int = 512, device: str = "cuda", kernel: str = "auto") -> list[dict]:
    """MINER at `resolution`³ for every combination of `hidden` and `stop_mse` (comma lists) on one set of grid
    labels; then SIREN and hashgrid with the first MINER fit's training seconds."""
    from fieldlab.fit.miner_mesh import occupancy_grid
    from fieldlab.fit.occupancy import OccupancyConfig, fit_mesh
    from fieldlab.signals.mesh import Mesh, read_mesh

    if path.suffix == ".npz":  # arrays made where trimesh is installed (fit_modalities.py --prepare)
        arrays = np.load(path)
        mesh = Mesh.from_arrays(arrays["vertices"], arrays["faces"], source=path.name)
    else:
        mesh = read_mesh(path)
    rows = []
    occupancy = OccupancyConfig(resolution=resolution, eval_points=2**18, chamfer_points=50_000)
    tick = time.perf_counter()
    inside = occupancy_grid(mesh, resolution, device=device, chunk=occupancy.chunk, backend=occupancy.backend)
    label_seconds = round(time.perf_counter() - tick, 1)
    budget = None
    for h in (int(v) for v in hidden.split(",")):
        for stop in (float(v) for v in stop_mse.split(",")):
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            config = make_config("miner", in_dim=3, out_dim=1, scales=3, hidden_dim=h, num_layers=2
                                 ).adapt((resolution,) * 3)
            result = M.fit_mesh(mesh, config, FitConfig(steps=steps, max_seconds=seconds, device=device, kernel=kernel),
                                occupancy,
                                train=M.MinerTrainConfig(prune_mse=1e-3, stop_mse=stop), inside=inside)
            m = result.metrics
            rows.append({"field": "miner", "mesh": f"bunny@{resolution}", "iou": m["iou"], "iou_grid": m["iou_grid"],
                         "seconds": m["seconds"], "label_seconds": label_seconds, "params": m["params"],
                         "peak_gib": (m["peak_memory_bytes"] or 0) / 2**30, "blocks": m["blocks_per_scale"],
                         "steps": steps, "steps_run": m["steps"], "hidden": h, "stop_mse": stop,
                         "kernel": m["kernel"]})
            print(json.dumps(rows[-1]), flush=True)
            budget = budget or m["seconds"]
    del inside
    for name in ("siren", "hashgrid") if baselines else ():
        torch.cuda.reset_peak_memory_stats()
        result = fit_mesh(mesh, make_config(name, in_dim=3, out_dim=1).adapt((resolution,) * 3),
                          FitConfig(steps=10**6, max_seconds=budget, batch_size=2**17, device=device, precision="tf32"),
                          OccupancyConfig(resolution=256, eval_points=2**18, chamfer_points=50_000))
        r = result.metrics
        rows.append({"field": name, "mesh": "bunny", "iou": r["iou"], "seconds": r["seconds"], "params": r["params"],
                     "peak_gib": peak() / 2**30})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--sizes", default="full,4096,8192")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--mesh", action="store_true")
    parser.add_argument("--mesh-file", type=Path, help="the bunny as .obj or as a vertices/faces .npz "
                        "(default: DATA/bunny.npz if it exists, else DATA/bunny.obj)")
    parser.add_argument("--mesh-steps", type=int, default=16000)
    parser.add_argument("--mesh-hidden", default="16", help="comma list of widths")
    parser.add_argument("--mesh-stop-mse", default="5e-5", help="comma list: a block stops training below this MSE")
    parser.add_argument("--mesh-resolution", type=int, default=512)
    parser.add_argument("--no-baselines", action="store_true", help="the mesh: MINER alone")
    parser.add_argument("--mesh-kernel", default="auto", help="the mesh's MINER: auto, fused or reference")
    parser.add_argument("--memory-sizes", default="", help="e.g. 4096,8192,16384: resident vs streaming")
    parser.add_argument("--memory-modes", default="resident,budget,streaming", help="which memory runs")
    parser.add_argument("--device-budget-gib", type=float, default=1.5)
    parser.add_argument("--memory-seconds", type=float, default=60.0, help="time limit of each memory run")
    parser.add_argument("--precisions", default="fp32", help="at the first memory size, resident: e.g. fp32,tf32,bf16")
    parser.add_argument("--sweep", action="store_true", help="option combinations on the full image")
    parser.add_argument("--sweep-seconds", type=float, default=8.0)
    parser.add_argument("--sweep-size", default="full", help="the image of the sweep (full, or a square side)")
    parser.add_argument("--kernel-sizes", default="", help="e.g. full,4096: the reference path against the fused "
                        "kernel at the same steps (--kernel-steps), for each of --kernel-precisions")
    parser.add_argument("--kernel-precisions", default="fp32,bf16")
    parser.add_argument("--kernel-steps", type=int, default=600)
    parser.add_argument("--kernel-repeats", type=int, default=2)
    parser.add_argument("--kernel-blocks", default="", help="e.g. 16x2: also the kernel at these POINTSxWARPS blocks")
    parser.add_argument("--device", default="cuda", help="cpu runs the memory and sweep parts tiny, as a smoke test")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=1))

    if args.device.startswith("cuda"):
        torch.zeros(1, device="cuda")
    budget = args.device_budget_gib * 2**30
    if args.memory_sizes or args.sweep or args.kernel_sizes:  # kernels and libraries warm before anything is timed
        for kernel in ("reference", "fused") if args.kernel_sizes else ("auto",):
            for precision in args.kernel_precisions.split(",") if args.kernel_sizes else ("fp32",):
                run_memory(image(args.data / "div2k_0882.png", "256"), 3, 2.0, args.device, kernel=kernel,
                           precision=precision)
    if args.kernel_sizes:
        compare_kernels(args.data, args.kernel_sizes.split(","), args.kernel_precisions.split(","), args.kernel_steps,
                        args.kernel_repeats, args.device, emit, list(filter(None, args.kernel_blocks.split(","))))
    for n, size in enumerate(filter(None, args.memory_sizes.split(","))):
        signal = image(args.data / "div2k_0882.png", size)
        scales = SCALES.get(size, 4)
        modes = args.memory_modes.split(",")
        runs = [("resident", {"precision": p}) for p in (args.precisions.split(",") if n == 0 else ["fp32"])
                if "resident" in modes]
        empty = make_config("miner", in_dim=2, out_dim=3, scales=scales).adapt(signal.shape)
        if "budget" in modes and data_bytes(empty.replace(blocks=(0,) * scales).build(), 3) < budget:
            runs.append(("resident, budget", {"streaming": "off", "device_budget": budget}))  # else it cannot fit
        if "streaming" in modes:
            runs.append(("streaming, budget", {"streaming": "on", "device_budget": budget}))
        for label, options in runs:
            try:
                emit({"memory": size, "run": label, **run_memory(signal, scales, args.memory_seconds, args.device,
                                                                **options)})
            except Exception as error:  # one failed run (e.g. out of memory) must not lose the others
                emit({"memory": size, "run": label, "error": f"{type(error).__name__}: {error}"[:300]})
        del signal
    if args.sweep:
        signal = image(args.data / "div2k_0882.png", args.sweep_size)
        for label, options in SWEEP.items():
            try:
                emit({"sweep": label, **run_memory(signal, SCALES.get(args.sweep_size, 3), args.sweep_seconds,
                                                   args.device, **options)})
            except Exception as error:
                emit({"sweep": label, "error": f"{type(error).__name__}: {error}"[:300]})
        del signal
    for size in filter(None, args.sizes.split(",")):  # --sizes "": the mesh alone
        signal = image(args.data / "div2k_0882.png", size)
        scales = SCALES.get(size, 4)
        row = run_miner(signal, args.seconds, {"scales": scales, "prune_mse": 5e-5, "stop_mse": 3e-5})
        emit({"image": size, **row})
        for name in ("siren", "hashgrid"):
            emit({"image": size, **run_baseline(name, signal, row["seconds"])})
        del signal
        torch.cuda.empty_cache()
    if args.mesh:
        mesh_file = args.mesh_file or next((p for p in (args.data / "bunny.npz", args.data / "bunny.obj")
                                            if p.exists()), args.data / "bunny.obj")
        for row in run_mesh(mesh_file, 2 * args.seconds, args.mesh_steps, args.mesh_hidden,
                            not args.no_baselines, stop_mse=args.mesh_stop_mse, resolution=args.mesh_resolution,
                            device=args.device, kernel=args.mesh_kernel):
            rows.append(row)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
