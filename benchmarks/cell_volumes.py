"""Voronoi cell weights (`points.cell_volumes`, DI-Net's quadrature) through a k-d tree against the distance matrix.

    python benchmarks/cell_volumes.py [--points 256,1024,4096] [--threads 2]

`cell_volumes` counts 16 probes per point for their nearest point (`_neighbors.nearest`). On a CPU, `nearest` asks
scipy's k-d tree from `TREE_FROM` pairs on; the reference is the same call with the tree off (chunked distance
matrices, as on a GPU). Same points, same process, the two taking turns; median of `--repeats`. Also prints the
largest difference of the weights (exact ties between a probe's two nearest points may break either way).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import fieldlab  # noqa: E402, F401  before torch, as the program
import torch  # noqa: E402

from fieldlab.learn import _neighbors  # noqa: E402
from fieldlab.learn.points import cell_volumes  # noqa: E402


def timed(coords: torch.Tensor, tree: bool) -> tuple[float, torch.Tensor]:
    saved = _neighbors.TREE_FROM
    _neighbors.TREE_FROM = 0 if tree else 10 ** 18
    try:
        began = time.perf_counter()
        weights = cell_volumes(coords)
        return time.perf_counter() - began, weights
    finally:
        _neighbors.TREE_FROM = saved


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="256,1024,4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"cpu ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print(f"{'points':>7} {'matrix ms':>10} {'tree ms':>8} {'× faster':>9} {'max |Δw|':>9}")
    for n in (int(v) for v in args.points.split(",")):
        coords = torch.rand(n, 2, generator=torch.Generator().manual_seed(n)) * 2 - 1
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for tree in (False, True):
                seconds, weights = timed(coords, tree)
                times[tree].append(seconds)
                if tree:
                    by_tree = weights
                else:
                    by_matrix = weights
        matrix, tree = statistics.median(times[False]) * 1e3, statistics.median(times[True]) * 1e3
        print(f"{n:>7} {matrix:10.1f} {tree:8.1f} {matrix / tree:9.1f} {float((by_tree - by_matrix).abs().max()):9.2g}")


if __name__ == "__main__":
    main()
