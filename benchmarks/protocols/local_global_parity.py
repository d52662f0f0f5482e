"""Local-Global SIREN vs SIREN at equal parameters (Ashkenazi & Treister 2024, the parity table): every
image fitted by SIREN, Local-Global and `local` (its ablation: a SIREN per partition, no global branch), each sized with
`--params` to the same budget, the same steps, full batches and seed; table.csv, table.png, commands.txt.

    python benchmarks/protocols/local_global_parity.py --images 'data/DIV2K_subset/*.png' --out OUT
    python benchmarks/protocols/local_global_parity.py --smoke --out OUT

The paper's setting (reference/local_global_and_miner.md): a 25-image DIV2K subset (IDs 0010 0044 0089 …;
the list is in the reference note), 16×16 partitions, about 200k parameters, 1,001 full-batch steps; its
tables were not retrievable, so this protocol reports ours beside no paper number. Each method uses its
field's tuned learning rate, chosen on scikit-image's astronaut (BENCHMARKS.md, sweeps), not on these
images: leave astronaut out of --images (rule 2). `--max-size` downsamples large photos first (DIV2K at 2K
wants a GPU: `--max-size 512` is the paper's ÷4 scale).
"""

from __future__ import annotations

import _images as I
import _protocol as P

WHERE = ("put the DIV2K images there (e.g. the 25-image subset of reference/local_global_and_miner.md, from "
         "DIV2K_train_HR/valid_HR) or give --images FILES/GLOBS/sample:NAME, comma-separated")


def main() -> None:
    p = P.parser(__doc__)
    p.add_argument("--images", default="data/DIV2K_subset/*.png", help="files, globs or sample:NAME, comma-separated")
    p.add_argument("--params", type=int, default=200_000)
    p.add_argument("--steps", type=int, default=1001)
    p.add_argument("--partitions", default="16", help="Local-Global's partitions per axis")
    p.add_argument("--max-size", type=int, default=512)
    args = p.parse_args()
    if args.smoke:
        args.images, args.params, args.steps, args.partitions, args.max_size = I.SMOKE_IMAGES, 3000, 15, "2", 32
        args.device = "cpu" if args.device == "auto" else args.device
    paths = I.images(args.images, "images", WHERE)
    proto = P.Protocol(args)
    partitioned = ["--params", args.params, "--partitions", args.partitions]
    methods = {"siren": ["--field", "siren", "--params", args.params],
               "local-global": ["--field", "local-global", *partitioned],
               "local": ["--field", "local-global", "--mode", "local", *partitioned]}
    # Equal steps and samples per step for every method: full batches, no time limit, no early stop.
    common = ["--steps", args.steps, "--batch-size", 0, "--max-seconds", 0, "--target-psnr", 0,
              "--max-size", args.max_size]
    rows = I.mean_rows(I.fit_all(proto, args, paths, methods, common))
    proto.table(rows, I.COLUMNS)
    I.plot(proto, rows, args.device, f"Local-Global vs SIREN at ~{args.params:,} parameters, {args.steps} steps")


if __name__ == "__main__":
    main()
