"""Sweep learning rates and options of each architecture on astronaut (how the tuned defaults were chosen).

    python benchmarks/sweep.py --data .bench_data --steps 1000 --runs "siren:lr=5e-4,1e-3,2e-3" "gauss:scale=10,20"

Each run fits astronaut at about 200k parameters with bf16 autocast and torch.compile and prints its PSNR.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fieldlab.fields import make_config  # noqa: E402
from fieldlab.fit import FitConfig, Fitter  # noqa: E402
from fieldlab.signals import Signal  # noqa: E402

torch._dynamo.config.cache_size_limit = 64  # many fits with different options in one process


def one(name: str, option: str, value: str, signal: Signal, args) -> tuple[float, float]:
    options = {} if option == "lr" else {option: value}
    config = make_config(name, in_dim=2, out_dim=3, **options).adapt(signal.shape).with_params(args.params)
    lr = float(value) if option == "lr" else type(config).lr
    torch.manual_seed(0)
    fitter = Fitter(config.build(), signal.coords(), signal.flat_values(),
                    FitConfig(steps=args.steps, device="cuda", precision=args.precision, compile=True),
                    lr=lr, betas=type(config).adam_betas, eps=type(config).adam_eps)
    while not fitter.should_stop():
        fitter.step()
    return fitter.full_psnr(), fitter.elapsed()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(".bench_data"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--params", type=int, default=200_000)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--runs", nargs="+", required=True, help="NAME:OPTION=V1,V2,...")
    args = parser.parse_args()
    signal = Signal.from_array(np.load(args.data / "astronaut.npy"), kind="image")
    for run in args.runs:
        name, spec = run.split(":")
        option, values = spec.split("=")
        for value in values.split(","):
            tick = time.perf_counter()
            psnr, seconds = one(name, option, value, signal, args)
            print(f"{name:<9} {option}={value:<8} PSNR@{args.steps} {psnr:6.2f} dB  fit {seconds:5.1f} s "
                  f"(wall {time.perf_counter() - tick:5.1f} s)", flush=True)


if __name__ == "__main__":
    main()
