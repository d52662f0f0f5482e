"""MINER against SIREN and hashgrid at the same time budget: DIV2K 0882 at full size and upscaled to
4096² and 8192², and the bunny's occupancy at 512³ (issue 5). Prints one JSON line per run.

    python benchmarks/miner.py --data DIR [--sizes full,4096,8192] [--seconds 20] [--mesh] [--mesh-file F]
                               [--out FILE]

The mesh may be a vertices/faces .npz (benchmarks/fit_modalities.py --prepare writes DIR/bunny.npz), so
the GPU machine needs no trimesh; `--sizes ""` runs the mesh alone.

Upscaling: Lanczos (Pillow) of the 2040×1356 image to a square (the aspect ratio is stretched), so the
large images are smooth at the pixel scale, like the MINER_pl Pluto table they are compared with.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fieldlab.fields import make_config
from fieldlab.fit import FitConfig, fit
from fieldlab.fit import miner as M
from fieldlab.signals import Signal


def image(path: Path, size: str) -> Signal:
    from PIL import Image

    picture = Image.open(path).convert("RGB")
    if size != "full":
        picture = picture.resize((int(size), int(size)), Image.LANCZOS)
    return Signal.from_array(np.asarray(picture), kind="image", source=f"{path.name}@{size}")


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


def run_mesh(path: Path, seconds: float, steps: int = 600, hidden: int = 8, baselines: bool = True,
             stop_mse: float = 2e-4) -> list[dict]:
    from fieldlab.fit.occupancy import OccupancyConfig, fit_mesh
    from fieldlab.signals.mesh import Mesh, read_mesh

    if path.suffix == ".npz":  # arrays made where trimesh is installed (fit_modalities.py --prepare)
        arrays = np.load(path)
        mesh = Mesh.from_arrays(arrays["vertices"], arrays["faces"], source=path.name)
    else:
        mesh = read_mesh(path)
    rows = []
    torch.cuda.reset_peak_memory_stats()
    config = make_config("miner", in_dim=3, out_dim=1, scales=3, hidden_dim=hidden, num_layers=2,
                         prune_mse=1e-3, stop_mse=stop_mse).adapt((512,) * 3)
    occupancy = OccupancyConfig(resolution=512, eval_points=2**18, chamfer_points=50_000)
    result = M.fit_mesh(mesh, config, FitConfig(steps=steps, max_seconds=seconds, device="cuda"),
                        occupancy)
    m = result.metrics
    rows.append({"field": "miner", "mesh": "bunny@512", "iou": m["iou"], "iou_grid": m["iou_grid"],
                 "seconds": m["seconds"], "label_seconds": m["label_seconds"], "params": m["params"],
                 "peak_gib": m["peak_memory_bytes"] / 2**30, "blocks": m["blocks_per_scale"], "steps": steps,
                 "hidden": hidden})
    budget = m["seconds"]
    for name in ("siren", "hashgrid") if baselines else ():
        torch.cuda.reset_peak_memory_stats()
        result = fit_mesh(mesh, make_config(name, in_dim=3, out_dim=1).adapt((512,) * 3),
                          FitConfig(steps=10**6, max_seconds=budget, batch_size=2**17, device="cuda", precision="tf32"),
                          OccupancyConfig(resolution=256, eval_points=2**18, chamfer_points=50_000))
        r = result.metrics
        rows.append({"field": name, "mesh": "bunny", "iou": r["iou"], "seconds": r["seconds"], "params": r["params"],
                     "peak_gib": peak() / 2**30})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--sizes", default="full,4096,8192")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--mesh", action="store_true")
    parser.add_argument("--mesh-file", type=Path, help="the bunny as .obj or as a vertices/faces .npz "
                        "(default: DATA/bunny.npz if it exists, else DATA/bunny.obj)")
    parser.add_argument("--mesh-steps", type=int, default=600)
    parser.add_argument("--mesh-hidden", type=int, default=8)
    parser.add_argument("--mesh-stop-mse", type=float, default=2e-4, help="a block stops training below this MSE")
    parser.add_argument("--no-baselines", action="store_true", help="the mesh: MINER alone")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=1))

    torch.zeros(1, device="cuda")
    for size in filter(None, args.sizes.split(",")):  # --sizes "": the mesh alone
        signal = image(args.data / "div2k_0882.png", size)
        scales = {"full": 3, "4096": 4, "8192": 5}.get(size, 4)
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
                            not args.no_baselines, stop_mse=args.mesh_stop_mse):
            emit(row)


if __name__ == "__main__":
    main()
