"""Seams of partitioned and block fields: Local-Global and MINER against a SIREN of the same parameter count.

    python benchmarks/seams.py --prepare ../shared/data/images/natural512/07.png   # once: a held-out photo
    python benchmarks/seams.py --steps 300 --append BENCHMARKS.md

The photo is copied into the git-ignored `.bench_data/seams/` and read at `--size` pixels (the README's
Local-Global example: 128 px, `--partitions 4,4`). Every method fits the same signal for the same steps on
the same device with its field's own learning rate; reported: parameters, PSNR, and the seam metric
(`fieldlab.fit.seams`): PSNR of the samples within one of a partition or block border against the interior
(seam dB = interior - border). A SIREN scored on the same borders shows how hard those rows are anyway.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fieldlab.fields import make_config  # noqa: E402
from fieldlab.fit import FitConfig, fit  # noqa: E402
from fieldlab.fit.seams import inner_edges, seam_psnrs  # noqa: E402
from fieldlab.signals import load_signal  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".bench_data" / "seams"


def methods(signal, args) -> dict:
    """name -> (config, the borders its seams are scored on)."""
    d, c, shape = signal.info.in_dim, signal.info.channels, signal.shape
    found = {}
    for overlap in args.overlaps:
        for blend in args.blends:
            extra = {"overlap": (overlap,)}  # 0 is no margin, not the default one
            extra.update({"blend": (blend,)} if blend else {})
            config = make_config("local-global", in_dim=d, out_dim=c, partitions=tuple(args.partitions),
                                 **extra).adapt(shape)
            name = f"local-global {'x'.join(map(str, args.partitions))} overlap {overlap} blend {blend}"
            found[name] = (config, tuple(e[1:-1] for e in config.edges))
    if args.lg_only:
        return found
    lg_config, lg_edges = next(iter(found.values()))
    found["siren (LG's count)"] = (make_config("siren", in_dim=d, out_dim=c).with_params(lg_config.num_params()),
                                   lg_edges)
    miner = make_config("miner", in_dim=d, out_dim=c).adapt(shape)
    found["miner"] = (miner, inner_edges(shape, miner.resolved_block_size()))
    return found


def run(args) -> list[dict]:
    signal = load_signal(str(args.image), max_size=args.size)
    rows, siren_for_miner = [], None
    for name, (config, edges) in methods(signal, args).items():
        rows.append(score(name, signal, config, edges, args))
        if name == "miner":
            params = rows[-1]["params"]
            siren_for_miner = make_config("siren", in_dim=signal.info.in_dim, out_dim=signal.info.channels)
            rows.append(score("siren (MINER's count)", signal, siren_for_miner.with_params(params), edges, args))
    return rows


def score(name, signal, config, edges, args) -> dict:
    start = time.perf_counter()
    # every step on every sample: no CPU time limit, no mini-batches (the device defaults would pick them)
    result = fit(signal, config, FitConfig(steps=args.steps, device=args.device, seed=0, max_seconds=0,
                                           batch_size=0))
    seconds = time.perf_counter() - start
    prediction = result.prediction.reshape(signal.values.shape).float()
    row = {"method": name, "params": sum(p.numel() for p in result.field.parameters()),
           "psnr": result.metrics["psnr"], "seconds": seconds, **seam_psnrs(prediction, signal.values, edges)}
    print(f"{name:45s} {row['params']:>8,} {row['psnr']:6.2f} dB  border {row['border_psnr']:6.2f}  "
          f"interior {row['interior_psnr']:6.2f}  seam {row['seam_db']:5.2f} dB  {seconds:6.1f} s", flush=True)
    return row


def table(rows: list[dict], args) -> str:
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [f"### Seams ({datetime.date.today()}, {device}, {args.image.name} at {args.size} px, "
             f"{args.steps} steps)", "", f"`python {' '.join(sys.argv)}`", "",
             "| method | params | PSNR | border PSNR | interior PSNR | seam (interior - border) | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['params']:,} | {r['psnr']:.2f} | {r['border_psnr']:.2f} | "
                     f"{r['interior_psnr']:.2f} | {r['seam_db']:.2f} dB | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", type=Path, help="copy this photo into .bench_data/seams/ and stop")
    parser.add_argument("--image", type=Path, default=DATA / "photo.png")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--partitions", type=int, nargs="+", default=[4, 4])
    parser.add_argument("--overlaps", type=int, nargs="+", default=[0])
    parser.add_argument("--blends", type=int, nargs="+", default=[0])
    parser.add_argument("--lg-only", action="store_true", help="only the Local-Global variants")
    parser.add_argument("--append", type=Path, help="append the table to this markdown file (BENCHMARKS.md)")
    args = parser.parse_args()
    if args.prepare:
        DATA.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.prepare, DATA / "photo.png")
        return
    text = table(run(args), args)
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
