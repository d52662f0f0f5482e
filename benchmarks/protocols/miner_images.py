"""MINER's image table (Saragadam et al. 2022): PSNR, time and parameters of MINER against SIREN and a
hash grid given the same time per image; table.csv, table.png and commands.txt into --out.

    python benchmarks/protocols/miner_images.py --images 'data/miner/*.png' --seconds 60 --out OUT
    python benchmarks/protocols/miner_images.py --smoke --out OUT

The MINER_pl README's table (reference/local_global_and_miner.md: Pluto 4096² 42.14 dB in 53 s with 9.16 M
parameters, GPU not stated) is the comparison; its images are not shipped. Every method gets `fit
--max-seconds S` (the whole command, reading and writing included) and its own defaults, tuned on other
images (BENCHMARKS.md), never on the ones scored (rule 2); SIREN and the hash grid are sized to `--params`.
"""

from __future__ import annotations

import _images as I
import _protocol as P

WHERE = ("put large images there (MINER_pl's Pluto is NASA's PIA20291; any 4K photo does) or give --images "
         "FILES/GLOBS/sample:NAME, comma-separated")


def main() -> None:
    p = P.parser(__doc__)
    p.add_argument("--images", default="data/miner/*.png", help="files, globs or sample:NAME, comma-separated")
    p.add_argument("--seconds", type=float, default=60, help="time per fit, the same for every method")
    p.add_argument("--params", type=int, default=1_000_000, help="SIREN's and the hash grid's size")
    p.add_argument("--batch-size", type=int, default=2**18, help="random pixels per step of SIREN and the hash grid")
    p.add_argument("--max-size", type=int, default=0, help="downsample first so no axis exceeds this (0: none)")
    args = p.parse_args()
    if args.smoke:
        args.images, args.seconds, args.params, args.max_size = I.SMOKE_IMAGES, 1.5, 8000, 48
        args.device = "cpu" if args.device == "auto" else args.device
    paths = I.images(args.images, "images", WHERE)
    proto = P.Protocol(args)
    # A full batch of a 4K image through a 1M-parameter SIREN does not fit a GPU: the baselines take random
    # pixels per step (MINER trains on its blocks' own samples).
    sampled = ["--params", args.params, "--batch-size", args.batch_size]
    methods = {"miner": ["--field", "miner"],
               "siren": ["--field", "siren", *sampled],
               "hashgrid": ["--field", "hashgrid", *sampled]}
    common = ["--max-seconds", args.seconds, "--steps", 10**6, "--target-psnr", 0]
    common += ["--max-size", args.max_size] if args.max_size else []
    rows = I.mean_rows(I.fit_all(proto, args, paths, methods, common))
    proto.table(rows, I.COLUMNS)
    I.plot(proto, rows, args.device, f"MINER vs SIREN and hash grid, {args.seconds:g} s per fit")


if __name__ == "__main__":
    main()
