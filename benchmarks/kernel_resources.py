"""What the fused kernels ask of a multiprocessor, without a GPU: registers, spills, shared memory, and the
programs per multiprocessor (occupancy) those allow.

    python benchmarks/kernel_resources.py                                   # SIREN 2×32, 3×64, 3×128 on an H100/H200
    python benchmarks/kernel_resources.py --field fourier --frequencies 32 --sizes 3x64 --kernels step,forward

Triton compiles each kernel for the architecture (`--arch`, 90: Hopper) with the launch constants that
`fit_batch` and `fused_forward` use, and the ptxas that Triton ships reports what it needs
(kernels/resources.py). No GPU and no CUDA driver are needed; it runs on any machine with Triton's
NVIDIA backend. The occupancy is what the limits allow, not a measurement: set it beside Nsight Compute's
where there is one (BENCHMARKS.md). A kernel that does not fit (shared memory beyond the per-program
limit) prints `does not fit`: that is what `choose_kernel` refuses.

Prints a Markdown table, and with `--json` one JSON object per row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.pop("TRITON_INTERPRET", None)  # compiled kernels, not the interpreter

from fieldlab.fields import make_config  # noqa: E402
from fieldlab.kernels import fused as fused_module  # noqa: E402
from fieldlab.kernels import fused_spec  # noqa: E402
from fieldlab.kernels.resources import HOPPER, forward_resources, step_resources  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--field", default="siren", choices=["siren", "gauss", "fourier"])
    parser.add_argument("--sizes", default="2x32,3x64,3x128", help="LAYERSxWIDTH, comma-separated")
    parser.add_argument("--precisions", default="fp32,tf32,bf16")
    parser.add_argument("--kernels", default="step", help="step, split (one large field), forward")
    parser.add_argument("--frequencies", type=int, default=32, help="Fourier features (--field fourier)")
    parser.add_argument("--in-dim", type=int, default=2)
    parser.add_argument("--out-dim", type=int, default=3)
    parser.add_argument("--points", type=int, default=1024, help="points per field and step (32×32 patches)")
    parser.add_argument("--split-points", type=int, default=1 << 20,
                        help="points per step of the one large field of the split kernel (a 1024² image)")
    parser.add_argument("--arch", type=int, default=90, help="compute capability ×10 (90: H100, H200)")
    parser.add_argument("--first-layer", default="default", choices=["default", "tile", "narrow"],
                        help="tile: every dimension through a 16-column tile; narrow: --in-dim coordinates as one "
                             "outer product each (default: as kernels.fused.NARROW_DIMS says, 2-D narrow)")
    parser.add_argument("--tuning", default="",
                        help="step kernel's launch knobs, e.g. block=64,warps=4,sums=1,first=1 (launch_constants)")
    parser.add_argument("--mix", action="store_true",
                        help="also the chunk loop's instructions: all, load-store pipe (shuffles, shared memory), "
                             "sine/cosine, tensor cores, fp32 arithmetic")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    tuning = {key: int(value) for key, value in (item.split("=") for item in args.tuning.split(",") if item)}
    sm = dataclasses.replace(HOPPER, arch=args.arch, name=f"sm_{args.arch}")
    if args.first_layer != "default":
        fused_module.NARROW_DIMS = () if args.first_layer == "tile" else (args.in_dim,)

    print(f"| field | precision | kernel | registers | spilled (stores / loads, B) | shared (KB) | warps "
          f"| programs per SM (registers / shared) | occupancy | limit | instructions |"
          + (" loop: all / LSU / MUFU / MMA / FP32 |" if args.mix else "") + f"\n|{'---|' * (11 + args.mix)}")
    for size in args.sizes.split(","):
        layers, width = (int(n) for n in size.split("x"))
        options = dict(hidden_dim=width, num_layers=layers, in_dim=args.in_dim, out_dim=args.out_dim)
        if args.field == "fourier":
            options["num_frequencies"] = args.frequencies
        spec = fused_spec(make_config(args.field, **options))
        if spec is None:
            raise SystemExit(f"the fused kernel does not cover {args.field} {size}")
        for precision in args.precisions.split(","):
            for kernel in args.kernels.split(","):
                if kernel == "forward":
                    found = forward_resources(spec, precision, points=args.points, sm=sm)
                else:
                    split = kernel == "split"
                    found = step_resources(spec, precision, points=args.split_points if split else args.points,
                                           split=split, sm=sm, **tuning)
                programs = found.programs(sm)
                fits = found.fits(sm)
                print(f"| {args.field} {size} | {precision} | {kernel} | {found.registers} | {found.spill_stores} / "
                      f"{found.spill_loads} | {found.shared / 1024:.0f} | {found.warps} | "
                      + (f"{programs['registers']} / {programs['shared']} | {found.occupancy(sm):.1%} | "
                         f"{found.limit(sm)} |" if fits else "does not fit | 0 | shared |")
                      + f" {found.instructions} |" + (f" {_mix(found.loop)} |" if args.mix else ""), flush=True)
                if args.json:
                    print(json.dumps({"field": args.field, "size": size, "precision": precision, "kernel": kernel,
                                      "arch": args.arch, **dataclasses.asdict(found), "fits": fits,
                                      "occupancy": found.occupancy(sm)}), flush=True)


def _mix(loop: dict[str, int]) -> str:
    """The chunk loop's instructions: all, then by the pipe that runs them."""
    count = lambda *names: sum(loop.get(name, 0) for name in names)  # noqa: E731
    return (f"{count('total')} / {count('SHFL', 'LDS', 'STS', 'LDSM', 'STSM', 'LDL', 'STL')} / {count('MUFU')} / "
            f"{count('HMMA', 'HGMMA')} / {count('FMUL', 'FADD', 'FFMA')}")


if __name__ == "__main__":
    main()
