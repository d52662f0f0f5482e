"""One large signal, one field: the fused Triton kernel (`fieldlab fit --kernel fused`) against the
reference path (the plain nn.Module, autograd and torch's fused Adam), in the same run (issue 8, item 3).

    cp ../shared/data/images/div2k_0882.png .bench_media/    # once, on the machine that prepares a run
    python3 benchmarks/fit_single.py --image .bench_media/div2k_0882.png
    python3 benchmarks/fit_single.py --sizes 3x64 --batch-sizes 0,65536,16384 --parts 0,132,1056  # where it pays
    python3 benchmarks/fit_single.py --field local --sizes 4x15 --precisions fp32,tf32,bf16  # README's partitions

The image (any image file) is centre-cropped to `--crop` pixels a side (512 by default; 0 keeps it whole)
and fitted by SIREN (ω₀ 30), or with `--field local` by Local-Global's local mode (one sine MLP per partition, the
kernel stepping them as a stack), at each of `--sizes` (layers×width), at each `--precisions`, with each of
`--batch-sizes` points per step (0: every pixel), for `--steps` Adam steps from the same initialisation
and learning-rate schedule, by the fused kernel (with each of `--parts` programs sharing the field's
points; 0, the default, lets the kernel choose) and by the reference path (and, with `--compile`, the
reference path under torch.compile: one compilation per row, so keep the row count small with it). Through `fieldlab.fit.Fitter`, so both paths are what `fieldlab fit`
runs. Timing: the first step (Triton's or torch.compile's compilation) is left out; the others are timed
with the device synchronised before and after. Printed: a markdown table of steps/s, point-steps/s, end
PSNR on the whole image, peak GPU memory and the speed ratio to the reference path of the same row
group. Needs a CUDA GPU (the CPU runs the kernel only through Triton's interpreter: `--device cpu` with
TRITON_INTERPRET=1 and tiny `--crop`/`--steps` is a smoke test of this script, not a measurement).
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
from fieldlab.kernels import fused_spec  # noqa: E402
from fieldlab.fit import FitConfig, Fitter  # noqa: E402
from fieldlab.fit.config import points_per_step  # noqa: E402
from fieldlab.signals.image import image_signal  # noqa: E402

torch._dynamo.config.cache_size_limit = 64  # several compiled fits in one process


def load(path: Path, crop: int):
    """The image at `path` as a Signal, centre-cropped to crop × crop (whole when crop is 0)."""
    import imageio.v3 as iio

    raw = np.asarray(iio.imread(path))
    if raw.ndim == 3 and raw.shape[-1] == 4:
        raw = raw[..., :3]
    if crop:
        if min(raw.shape[:2]) < crop:
            sys.exit(f"{path} is {raw.shape[1]}×{raw.shape[0]}, smaller than --crop {crop}")
        top, left = (raw.shape[0] - crop) // 2, (raw.shape[1] - crop) // 2
        raw = raw[top:top + crop, left:left + crop]
    return image_signal(np.ascontiguousarray(raw), source=str(path))


def run(path: str, signal, layers: int, width: int, precision: str, batch_size: int, args,
        parts: int = 0) -> dict:
    """One fit; returns its row of the table. `parts`: programs sharing the field's points (fused path; 0:
    the kernel's default, `FusedStack.default_parts`)."""
    if args.field == "local":  # Local-Global's local mode at its default partitions and margins
        config = make_config("local-global", in_dim=2, out_dim=signal.info.channels, mode="local", hidden_dim=width,
                             num_layers=layers).adapt(signal.shape)
    else:
        config = make_config("siren", in_dim=2, out_dim=signal.info.channels, hidden_dim=width, num_layers=layers,
                             omega0=30.0, first_omega0=30.0)
    spec = fused_spec(config) if path == "fused" else None
    if path == "fused" and spec is None:
        sys.exit(f"the fused kernel does not cover {args.field} {layers}×{width}")
    fit_config = FitConfig(steps=args.steps, lr=args.lr, batch_size=batch_size, precision=precision,
                           compile=path == "compiled", device=args.device, seed=args.seed)
    torch.manual_seed(args.seed)
    field = config.build()
    coords, values = signal.coords(), signal.flat_values()
    if args.field == "local":  # as `fieldlab.fit.fit`: each partition's points and its margin, tagged
        coords, values = field.training_points(coords, values, signal.shape)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    fitter = Fitter(field, coords, values, fit_config, lr=args.lr or type(config).lr,
                    betas=type(config).adam_betas, eps=type(config).adam_eps, fused_spec=spec)
    points = points_per_step(fit_config, fitter.num_points)
    if spec is not None:
        stack = fitter._fused.stack  # a tuning knob of this benchmark, not of the library
        if parts:
            stack.default_parts = lambda *_: parts
        parts = stack.default_parts(points)
    fitter.step()  # compilation (Triton's or torch.compile's) and first launches: not timed
    _sync(device)
    start = time.perf_counter()
    while not fitter.should_stop():
        fitter.step()
    _sync(device)
    seconds = time.perf_counter() - start
    rate = (fitter.step_count - 1) / seconds
    return {"size": f"{layers}×{width}", "params": config.num_params(), "precision": precision, "points": points,
            "path": path, "kernel": fitter.kernel, "parts": parts or None, "steps": fitter.step_count,
            "seconds": round(seconds, 4),
            "steps_per_s": rate, "point_steps_per_s": rate * points, "psnr": fitter.full_psnr(),
            "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def table(rows: list[dict]) -> str:
    lines = ["| size | precision | points/step | path | parts | steps/s | point-steps/s | end PSNR (dB) | peak GB | "
             "× reference |", "|---|---|---|---|---|---|---|---|---|---|"]
    reference = {(r["size"], r["precision"], r["points"]): r["steps_per_s"] for r in rows if r["path"] == "reference"}
    for r in rows:
        base = reference.get((r["size"], r["precision"], r["points"]))
        ratio = f"{r['steps_per_s'] / base:.2f}" if base else "—"
        lines.append(f"| {r['size']} | {r['precision']} | {r['points']:,} | {r['path']} | {r['parts'] or '—'} | "
                     f"{r['steps_per_s']:.1f} | "
                     f"{r['point_steps_per_s']:.3g} | {r['psnr']:.2f} | {r['peak_gb']:.2f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=Path(".bench_media/div2k_0882.png"))
    parser.add_argument("--crop", type=int, default=512, help="centre crop side in pixels (0: the whole image)")
    parser.add_argument("--field", choices=("siren", "local"), default="siren",
                        help="siren, or local: Local-Global's local mode (a sine MLP per partition, at its default "
                             "partitions and margins; --sizes then gives each partition's MLP)")
    parser.add_argument("--sizes", default="3x64,3x128", help="SIREN sizes as LAYERSxWIDTH, comma separated")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--precisions", default="tf32,bf16")
    parser.add_argument("--batch-sizes", default="0", help="points per step, comma separated (0: every pixel)")
    parser.add_argument("--lr", type=float, default=None, help="default: SIREN's tuned rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", default="0", help="fused path: programs sharing the field's points, comma "
                        "separated (0: the kernel's default)")
    parser.add_argument("--compile", action="store_true", help="also time the reference path under torch.compile")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    if not args.image.is_file():
        sys.exit(f"no image at {args.image} (copy one there, e.g. ../shared/data/images/div2k_0882.png)")
    signal = load(args.image, args.crop)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    runs = [("fused", int(p)) for p in args.parts.split(",")] + [("reference", 0)]
    runs += [("compiled", 0)] if args.compile else []
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else args.device
    print(f"# {args.field}, {args.image} {'×'.join(map(str, signal.shape))}×{signal.info.channels}, "
          f"{args.steps} steps, {name}, "
          f"torch {torch.__version__}", flush=True)
    rows = []
    for layers, width in sizes:
        for precision in args.precisions.split(","):
            for batch_size in (int(b) for b in args.batch_sizes.split(",")):
                for path, parts in runs:
                    rows.append(run(path, signal, layers, width, precision, batch_size, args, parts))
                    r = rows[-1]
                    print(f"{r['size']} {precision} {r['points']:,} pts {path} {r['parts'] or ''}: "
                          f"{r['steps_per_s']:.1f} steps/s, {r['psnr']:.2f} dB", flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
