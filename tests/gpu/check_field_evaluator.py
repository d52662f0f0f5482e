"""GPU check: `FieldEvaluator` (learn/field_batch.py) reads stacked fields through the fused forward kernel on
CUDA; its values must equal the vmapped reference path's (run on a CUDA machine, not by pytest).

    python tests/gpu/check_field_evaluator.py [--first-layer narrow|tile]   # exit status 1 if any case fails

For 2-D and 3-D SIREN, Gaussian and Fourier-feature fields of the widths the kernel takes, at several point
counts (not multiples of the kernel's block), it compares the kernel's values with `kernel="reference"` on
the same random stacked fields: max |Δ| / max |reference| ≤ 1e-4. `--first-layer tile` runs 2-D fields through
the tensor-core tile instead of the narrow broadcast products (`kernels.fused.NARROW_DIMS`), to tell the two apart;
on an H100 (2026-12-05) narrow failed for 2-D SIREN and Gaussian fields (0.6-1.3) and tile passed (≤ 1.2e-6).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from fieldlab.fields import get_config_class  # noqa: E402
from fieldlab.kernels import fused as fused_module  # noqa: E402
from fieldlab.fit.batched import init_params  # noqa: E402
from fieldlab.learn.field_batch import FieldEvaluator  # noqa: E402
from fieldlab.learn.points import PointSampler  # noqa: E402

CASES = [("siren", 2, dict(hidden_dim=32, num_layers=2)), ("siren", 2, dict(hidden_dim=32, num_layers=3)),
         ("siren", 3, dict(hidden_dim=32, num_layers=2)), ("gauss", 2, dict(hidden_dim=32, num_layers=2)),
         ("fourier", 2, dict(hidden_dim=32, num_layers=2, num_frequencies=16))]


def check(name: str, dim: int, options: dict, points: int, fields: int = 37) -> float:
    config = get_config_class(name).from_options({"in_dim": dim, "out_dim": 3, **options})
    _, params, buffers = init_params(config, list(range(fields)), "random", seed=0)
    stacked = {k: v.cuda() for k, v in {**params, **buffers}.items()}
    point_set = PointSampler(kind="qmc", n=points, dim=dim, seed=1)(0)
    fused = FieldEvaluator(config, kernel="fused")(stacked, point_set).values
    reference = FieldEvaluator(config, kernel="reference")(stacked, point_set).values
    return float((fused - reference).abs().max() / reference.abs().max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-layer", choices=("narrow", "tile"), default="narrow")
    args = parser.parse_args()
    fused_module.NARROW_DIMS = () if args.first_layer == "tile" else (1, 2, 3)  # narrow: every case's dimension
    failed = 0
    for name, dim, options in CASES:
        for points in (64, 256, 1000):
            error = check(name, dim, options, points)
            ok = error <= 1e-4
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name} {dim}-D {options} at {points} points: relative error {error:.2e}"
                  f" ({args.first_layer} first layer)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
