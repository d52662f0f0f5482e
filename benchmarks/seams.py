"""Seams of partitioned and block fields: Local-Global and MINER against a SIREN of the same parameter count.

    python benchmarks/seams.py --prepare ../shared/data/images/natural512/07.png   # once: a held-out photo
    python benchmarks/seams.py --steps 300 --append BENCHMARKS.md
    python benchmarks/seams.py --image PHOTO --size 512 --miner-only --margins 0 2 --repeats 2 \
        --max-seconds 120 --batch-size auto --threads 1      # MINER's training margin, before/after, interleaved

The photo is copied into the git-ignored `.bench_data/seams/` and read at `--size` pixels (the README's
Local-Global example: 128 px, `--partitions 4,4`). Every method fits the same signal for the same steps on
the same device with its field's own learning rate; reported: parameters, PSNR, and the seam metric
(`fieldlab.fit.seams`): PSNR of the samples within one of a partition or block border against the interior
(seam dB = interior - border). A SIREN scored on the same borders shows how hard those rows are anyway.
MINER is scored on the block borders of each of its scales (finest first: every 32, 64, 128 samples for 3
scales of 32-sample blocks); `--margins` fits it with each training margin (`MinerTrainConfig.margin`), the
runs interleaved `--repeats` times (A B A B ...) so that their seconds compare on a loaded machine.
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
from fieldlab.fit.miner import MinerTrainConfig  # noqa: E402
from fieldlab.fit.seams import inner_edges, seam_psnrs  # noqa: E402
from fieldlab.signals import load_signal  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".bench_data" / "seams"


def methods(signal, args) -> dict:
    """name -> (config, the borders its seams are scored on, finest first; MINER's training options)."""
    d, c, shape = signal.info.in_dim, signal.info.channels, signal.shape
    if args.miner_only:
        return miners(signal, args)
    found = {}
    for overlap in args.overlaps:
        for blend in args.blends:
            extra = {"overlap": (overlap,)}  # 0 is no margin, not the default one
            extra.update({"blend": (blend,)} if blend else {})
            config = make_config("local-global", in_dim=d, out_dim=c, partitions=tuple(args.partitions),
                                 **extra).adapt(shape)
            name = f"local-global {'x'.join(map(str, args.partitions))} overlap {overlap} blend {blend}"
            found[name] = (config, [tuple(e[1:-1] for e in config.edges)], None)
    if args.lg_only:
        return found
    lg_config, lg_edges, _ = next(iter(found.values()))
    found["siren (LG's count)"] = (make_config("siren", in_dim=d, out_dim=c).with_params(lg_config.num_params()),
                                   lg_edges, None)
    return {**found, **miners(signal, args)}


def miners(signal, args) -> dict:
    """MINER with each of `--margins` (unset: its default), scored on every scale's block borders."""
    miner = make_config("miner", in_dim=signal.info.in_dim, out_dim=signal.info.channels).adapt(signal.shape)
    edges = [inner_edges(signal.shape, miner.resolved_block_size() * 2**k) for k in range(miner.scales)]
    edges = [e for e in edges if any(e)]  # a block wider than the signal has no inner border
    return {f"miner margin {'default' if m is None else m}": (miner, edges, MinerTrainConfig(margin=m))
            for m in args.margins}


def run(args) -> list[dict]:
    signal = load_signal(str(args.image), max_size=args.size)
    rows = []
    found = methods(signal, args)
    miner_names = [name for name in found if name.startswith("miner")]
    for name, (config, edges, train) in found.items():
        if name not in miner_names:
            rows.append(score(name, signal, config, edges, train, args))
    runs = {name: [] for name in miner_names}
    for _ in range(args.repeats):  # A B A B ...: each margin's seconds under the same load
        for name in miner_names:
            runs[name].append(score(name, signal, *found[name], args))
    for name in miner_names:
        rows.append(min(runs[name], key=lambda r: r["seconds"]) | {"all_seconds": [r["seconds"] for r in runs[name]]})
    if miner_names and not args.miner_only:
        params = rows[-1]["params"]
        siren = make_config("siren", in_dim=signal.info.in_dim, out_dim=signal.info.channels).with_params(params)
        rows.append(score("siren (MINER's count)", signal, siren, found[miner_names[-1]][1], None, args))
    return rows


def score(name, signal, config, edges, train, args) -> dict:
    start = time.perf_counter()
    # by default every step on every sample: no CPU time limit, no mini-batches (the device defaults would
    # pick them); --max-seconds and --batch-size auto fit as the command does on this device
    fit_config = FitConfig(steps=args.steps, device=args.device, seed=0, max_seconds=args.max_seconds,
                           batch_size=args.batch_size)
    result = fit(signal, config, fit_config, train=train)
    seconds = time.perf_counter() - start
    prediction = result.prediction.reshape(signal.values.shape).float()
    seams = [seam_psnrs(prediction, signal.values, e) for e in edges]  # finest borders first
    row = {"method": name, "params": sum(p.numel() for p in result.field.parameters()),
           "psnr": result.metrics["psnr"], "seconds": seconds, "steps": result.metrics.get("steps"), **seams[0],
           "seams": [s["seam_db"] for s in seams]}
    print(f"{name:45s} {row['params']:>8,} {row['psnr']:6.2f} dB  border {row['border_psnr']:6.2f}  "
          f"interior {row['interior_psnr']:6.2f}  seams {' / '.join(f'{v:.2f}' for v in row['seams'])} dB  "
          f"{row['steps']} steps  {seconds:6.1f} s", flush=True)
    return row


def table(rows: list[dict], args) -> str:
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [f"### Seams ({datetime.date.today()}, {device}, {args.image.name} at {args.size} px, "
             f"{args.steps} steps)", "", f"`python {' '.join(sys.argv)}`", "",
             "| method | params | PSNR | border PSNR | interior PSNR | seam (interior - border; MINER: per scale, "
             "finest first) | steps | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        seconds = " / ".join(f"{s:.1f}" for s in r.get("all_seconds", [r["seconds"]]))
        lines.append(f"| {r['method']} | {r['params']:,} | {r['psnr']:.2f} | {r['border_psnr']:.2f} | "
                     f"{r['interior_psnr']:.2f} | {' / '.join(f'{v:.2f}' for v in r['seams'])} dB | {r['steps']} | "
                     f"{seconds} |")
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
    parser.add_argument("--miner-only", action="store_true", help="only MINER, with each of --margins")
    parser.add_argument("--margins", type=lambda v: None if v == "default" else int(v), nargs="+", default=[None],
                        help="MINER's training margins (samples per side; 'default': its own)")
    parser.add_argument("--repeats", type=int, default=1, help="MINER's runs per margin, interleaved")
    parser.add_argument("--max-seconds", type=float, default=0.0, help="each fit's time limit (0: none)")
    parser.add_argument("--batch-size", type=lambda v: None if v == "auto" else int(v), default=0,
                        help="points per step (0: all; auto: the field's and device's default)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--append", type=Path, help="append the table to this markdown file (BENCHMARKS.md)")
    args = parser.parse_args()
    if args.prepare:
        DATA.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.prepare, DATA / "photo.png")
        return
    if args.threads:  # on a loaded 2-core machine two threads wait on each other (BENCHMARKS.md)
        torch.set_num_threads(args.threads)
    text = table(run(args), args)
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
