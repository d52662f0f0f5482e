"""The whole `fieldlab fit-dataset` command against the fused kernel alone, on the same patches in the same run.

    python benchmarks/fit_dataset_command.py --patches 60000 --sizes 2x32,3x64 --out DIR

The patches (`sample:patches:N`, seeded 32×32×3 crops of scikit-image's photos) are written once to an
.npz, the input a user brings. For each SIREN size:

- `kernel`: `fit_batch` on the fused kernel, bf16, over the patches already on the GPU in chunks of 4,096,
  after one warm-up chunk (no compilation, no reading, no writing): the most the command could reach;
- `command`: `python -m fieldlab fit-dataset patches.npz --out S --field siren ... --precision bf16` as a
  user runs it, wall time from the shell including Python's start, imports, reading, compilation and the
  zarr writes; run twice, the second time with the compile caches the first one left (Triton's cache,
  `torch.compile`'s), as a user's second run would;
- a cProfile of a third command run in this process, reduced to where its time went (reading, fitting,
  writing, the rest). From Python 3.12 on cProfile sees every thread (it is built on sys.monitoring), so
  `reading` and `writing` are the worker threads' totals, mostly overlapped with `fitting`, not time the
  fitting waited for; `benchmarks/fit_dataset_pipeline.py` measures what the pipeline leaves exposed.

The figure is fields/s = patches / seconds, and the command's share of the kernel's rate.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bytecode import use_bytecode  # noqa: E402
from fieldlab.fit.dataset_job import resolve_dataset_config  # noqa: E402
from fieldlab.fit.batched import BatchedFitConfig, fit_batch  # noqa: E402
from fieldlab.signals import grid_coords  # noqa: E402
from fieldlab.signals.datasets import Augmented, open_source  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PHASES = {  # cumulative time of these functions, by (file suffix, function name)
    "reading": [("signals/datasets.py", "values")],
    "fitting": [("fit/batched.py", "fit_batch")],
    "writing": [("store/field_store.py", "write_chunk")],
    "job": [("fit/dataset_job.py", "_run_dataset_job")],
}


def write_patches(count: int, path: Path) -> None:
    source = open_source(f"sample:patches:{count}")
    images = np.stack([source.raw(i) for i in range(len(source))])
    np.savez(path, images=images, labels=source.labels)


def kernel_rate(path: Path, size: str, steps: int, chunk: int) -> dict:
    source = open_source(str(path))
    layers, width = map(int, size.split("x"))
    config = resolve_dataset_config("siren", {"hidden_dim": width, "num_layers": layers}, source)  # as the command
    info = source.info()
    coords = grid_coords(info.domain, info.domain, info.shape).to(DEVICE)
    values = Augmented(source, copies=1, seed=0).values(np.arange(len(source))).to(DEVICE)  # as the command reads
    fit = BatchedFitConfig(steps=steps, target_psnr=0.0, precision="bf16", device=DEVICE)
    fit_batch(config, coords, values[:chunk], np.arange(chunk), fit)  # compile and warm up
    torch.cuda.synchronize() if DEVICE == "cuda" else None
    start, psnrs = time.perf_counter(), []
    for first in range(0, len(values), chunk):
        part = values[first:first + chunk]
        psnrs.append(fit_batch(config, coords, part, np.arange(first, first + len(part)), fit).psnr)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "fields_per_s": len(values) / seconds, "psnr": float(np.mean(np.concatenate(psnrs)))}


def command(path: Path, size: str, steps: int, store: Path) -> list[str]:
    layers, width = map(int, size.split("x"))
    return ["fit-dataset", str(path), "--out", str(store), "--field", "siren", "--hidden-dim", str(width),
            "--num-layers", str(layers), "--steps", str(steps), "--target-psnr", "0", "--precision", "bf16",
            "--force", "--quiet"]


def run_command(path: Path, size: str, steps: int, store: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fieldlab", *command(path, size, steps, store)], check=True, env=env)
    return time.perf_counter() - start


def profile_command(path: Path, size: str, steps: int, store: Path) -> dict:
    from fieldlab.cli.main import main

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    try:
        main(command(path, size, steps, store))
    except SystemExit as stop:
        if stop.code:
            raise
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats
    out = {"total": total}
    for phase, keys in PHASES.items():
        out[phase] = sum(v[3] for (file, _, name), v in stats.items()
                         if any(file.endswith(f) and name == n for f, n in keys))
    out["other_in_job"] = out["job"] - out["reading"] - out["fitting"] - out["writing"]
    top = pstats.Stats(profiler)
    top.sort_stats("cumulative").print_stats(30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=60000)
    parser.add_argument("--sizes", default="2x32,3x64")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=Path("fit_dataset_command"))
    parser.add_argument("--kernel-only", action="store_true",
                        help="only the kernel row (fit_batch over the patches), e.g. to compare two trees")
    parser.add_argument("--bytecode", type=Path, default=None,
                        help="compile every imported package's bytecode into this folder first and run the "
                             "commands with it, as an installed environment has it (benchmarks/bytecode.py)")
    args = parser.parse_args()
    if args.bytecode:
        print(f"bytecode compiled in {use_bytecode(args.bytecode):.1f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "patches.npz"
    if not path.exists():
        write_patches(args.patches, path)
    env = dict(os.environ, TRITON_CACHE_DIR=str((args.out / "triton_cache").resolve()),
               TORCHINDUCTOR_CACHE_DIR=str((args.out / "inductor_cache").resolve()))
    results = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "patches": args.patches,
               "steps": args.steps, "sizes": {}}
    for size in args.sizes.split(","):
        row = {"kernel": kernel_rate(path, size, args.steps, args.chunk)}
        if args.kernel_only:
            print(json.dumps({size: row}), flush=True)
            continue
        store = args.out / f"store_{size}"
        row["command_cold_s"] = run_command(path, size, args.steps, store, env)
        row["command_warm_s"] = run_command(path, size, args.steps, store, env)
        row["command_fields_per_s"] = args.patches / row["command_warm_s"]
        row["share_of_kernel"] = row["command_fields_per_s"] / row["kernel"]["fields_per_s"]
        row["profile"] = profile_command(path, size, args.steps, store)
        results["sizes"][size] = row
        print(json.dumps({size: row}, indent=1), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
