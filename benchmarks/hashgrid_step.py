"""A hash grid's training step: the encoding on Triton kernels (CUDA) against the PyTorch path, whose table is
read by `index_select` (fieldlab's) or by advanced indexing (before).

    python benchmarks/hashgrid_step.py                       # CPU, one thread, 256² points
    python benchmarks/hashgrid_step.py --device cuda --side 512
    python benchmarks/hashgrid_step.py --side 181 --src old=/tmp/old/src,new=src --repeats 3   # two trees

With `--src`, each tree's `index_select` step is timed in a process of its own (that tree's fieldlab first
on the path), the trees taking turns `--repeats` times; the figure is each tree's median.

All variants read the same rows of the same table and give the same values (tests/gpu/check_hashgrid.py);
they differ in how. `index_select`'s gradient is an `index_add_`; advanced indexing's an accumulating
`index_put_` (on CUDA, it sorts every index of the step); the kernels (`kernels.hashgrid`, CUDA only) compute
each point's corners in registers and add the table's gradient atomically. One step: forward on side² points
(the image's pixel grid, as a full-batch fit of a side² image has them; `--points random` for random ones),
mean squared error, backward, Adam, on the hash grid at its defaults (16 levels, 2^15 entries, a 64-wide MLP).
The variants take turns round by round in one process; the figure is the median round's milliseconds per step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

# a --src child imports the tree it was given; otherwise this checkout's src
sys.path.insert(0, os.environ.get("HASHGRID_STEP_SRC") or str(Path(__file__).resolve().parents[1] / "src"))

from fieldlab.fields import make_config  # noqa: E402
try:
    from fieldlab.kernels import hashgrid as hash_kernels  # noqa: E402
except ImportError:  # a --src child of a tree from before the kernels
    hash_kernels = None

_INDEX_SELECT = torch.index_select


def _advanced(table: torch.Tensor, dim: int, rows: torch.Tensor) -> torch.Tensor:
    """The gather as advanced indexing, as the encoding read its table before."""
    return table[rows]


def _variant(name: str) -> None:
    if hash_kernels is not None:
        hash_kernels.ENABLED = name == "kernels"
    torch.index_select = _advanced if name == "advanced indexing" else _INDEX_SELECT


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--side", type=int, default=256, help="side² points per step")
    parser.add_argument("--points", choices=("grid", "random"), default="grid")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--src", default="", help="NAME=SRC,...: the same step from several source trees "
                                                   "(as benchmarks/command_overhead.py's --src)")
    parser.add_argument("--repeats", type=int, default=3, help="with --src: turns per tree")
    parser.add_argument("--variant", default="", help=argparse.SUPPRESS)  # a --src child: this variant only
    args = parser.parse_args(argv)
    if args.src:
        return compare_trees(args)
    if hash_kernels is not None:
        hash_kernels.BACKGROUND = False  # the kernels prepared at their first step, not on a thread meanwhile
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_config("hashgrid", in_dim=2, out_dim=3).adapt((args.side, args.side)).build().to(device)
    if args.points == "grid":
        axis = torch.linspace(-1, 1, args.side, device=device)
        x = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    else:
        x = torch.rand(args.side ** 2, 2, device=device) * 2 - 1
    y = torch.rand(args.side ** 2, 3, device=device) * 2 - 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def steps(count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            loss = (model(x) - y).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) / count * 1e3

    names = ["index_select", "advanced indexing"] + (["kernels"] if device.type == "cuda" else [])
    names = [args.variant] if args.variant else names
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        for name in names:  # warm-up (the kernels compile here)
            _variant(name)
            steps(2)
        for _ in range(args.rounds):
            for name in names:
                _variant(name)
                times[name].append(steps(args.steps))
    finally:
        _variant("index_select")
        if hash_kernels is not None:
            hash_kernels.ENABLED = True
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({args.threads} threads)"
    print(f"{where}, torch {torch.__version__}, {args.side}² points ({args.points}), "
          f"median of {args.rounds} rounds of {args.steps}")
    if args.variant:  # a --src child: its median alone
        print(f"median {statistics.median(times[args.variant]):.3f}")
        return
    base = statistics.median(times["index_select"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<18} {median:9.2f} ms/step  {base / median:5.2f}× index_select  "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)})")


def compare_trees(args: argparse.Namespace) -> None:
    """The `index_select` step of each tree in turn, each run a process with that tree's src first on the path."""
    trees = dict(item.split("=", 1) for item in args.src.split(","))
    passed = [f"--{name}={getattr(args, name)}" for name in ("device", "side", "points", "steps", "rounds", "threads")]
    times: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, src in trees.items():
            env = {**os.environ, "HASHGRID_STEP_SRC": str(Path(src).resolve())}
            done = subprocess.run([sys.executable, __file__, *passed, "--variant", "index_select"], env=env,
                                  capture_output=True, text=True, check=True)
            times[name].append(float(done.stdout.split("median")[-1]))
    print(f"{args.device}, {args.side}² points ({args.points}), {args.threads} thread(s), "
          f"{args.repeats} turns per tree")
    base = statistics.median(next(iter(times.values())))
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<8} {median:9.2f} ms/step  {base / median:5.2f}× {next(iter(times))}  "
              f"(turns: {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
