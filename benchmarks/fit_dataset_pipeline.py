"""What `fieldlab fit-dataset` costs around its fitting, measured on a CPU against a stand-in for a GPU's fit.

    python benchmarks/fit_dataset_pipeline.py --patches patches.npz --size 2x32 --fit-seconds 0.48 \\
        --src /tmp/old/src --src src --repeats 2

A GPU fits a chunk of 4,096 SIREN patches in about half a second (H100, 2×32, bf16, 500 steps: 7.2 s for
60,000 fields); what the command does around that (opening the source, reading chunks, writing the store,
the summary) is CPU work, measured here without a GPU. Each `--src` tree's `fieldlab` runs the whole command
in a child process (`fieldlab.cli.main.main`, as `python -m fieldlab` runs it), except that its fitter's
`fit` sleeps `--fit-seconds` per chunk with the GIL released, as a thread waiting on a GPU does, and returns
fixed random parameters of the real shapes (made once, their time left out). So `exposed` = wall − chunks ×
fit-seconds is the time a GPU would have waited for the pipeline, and `wall` includes the start-up imports;
trees alternate, repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import sys, time, json
start = time.perf_counter()
sys.path.insert(0, {src!r})
import importlib, numpy as np, torch
from fieldlab.cli.main import main
job = importlib.import_module("fieldlab.fit.dataset_job")
from fieldlab.fit.batched import BatchResult

made = job.make_dataset_fitter
chunks, stand_in = [], []

def stub(config, fit, meta_options=None):
    fitter = made(config, fit, meta_options)
    tick = time.perf_counter()  # the stand-in's own set-up, left out of `exposed`
    rng = np.random.default_rng(0)
    params = {{k: torch.from_numpy((0.1 * rng.standard_normal(({chunk}, *s))).astype(np.float32))
              for k, s in fitter.per_field_shapes().items()}}
    stand_in.append(time.perf_counter() - tick)

    def fit_chunk(coords, values, rows, progress=None):
        time.sleep({fit_seconds})
        chunks.append(len(rows))
        return BatchResult({{k: v[:len(rows)] for k, v in params.items()}}, np.full(len(rows), 30.0, np.float32),
                           np.full(len(rows), 500, np.int32))

    fitter.fit = fit_chunk
    return fitter

job.make_dataset_fitter = stub
imported = time.perf_counter() - start
try:
    main({argv!r})
except SystemExit as stop:
    if stop.code:
        raise
print(json.dumps({{"wall": time.perf_counter() - start - sum(stand_in), "imports": imported, "chunks": len(chunks)}}))
"""


def run(src: Path, args, store: Path) -> dict:
    layers, width = map(int, args.size.split("x"))
    argv = ["fit-dataset", str(args.patches), "--out", str(store), "--field", "siren", "--hidden-dim", str(width),
            "--num-layers", str(layers), "--steps", "500", "--target-psnr", "0", "--chunk-fields", str(args.chunk),
            "--force", "--quiet"]
    code = CHILD.format(src=str(src.resolve()), fit_seconds=args.fit_seconds, chunk=args.chunk, argv=argv)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{src}: the command failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["exposed"] = result["wall"] - result["chunks"] * args.fit_seconds
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=Path, required=True, help=".npz of images (fit_dataset_command.py's)")
    parser.add_argument("--size", default="2x32", help="SIREN LAYERSxWIDTH (sets the stored parameters' shapes)")
    parser.add_argument("--fit-seconds", type=float, default=0.48, help="the stand-in fit's seconds per chunk")
    parser.add_argument("--chunk", type=int, default=4096, help="fields per chunk (the command's GPU default)")
    parser.add_argument("--src", type=Path, action="append", required=True, help="a tree's src/ (repeatable)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("fit_dataset_pipeline"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {str(src): [] for src in args.src}
    for repeat in range(args.repeats):
        for k, src in enumerate(args.src):
            result = run(src, args, args.out / f"store_{k}")
            rows[str(src)].append(result)
            print(json.dumps({"src": str(src), "repeat": repeat, **{k: round(v, 3) for k, v in result.items()}}),
                  flush=True)
    best = {src: min(r["exposed"] for r in runs) for src, runs in rows.items()}
    print(json.dumps({"size": args.size, "fit_seconds": args.fit_seconds, "best_exposed_s": best}))


if __name__ == "__main__":
    main()
