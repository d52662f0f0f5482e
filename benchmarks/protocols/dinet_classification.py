"""DI-Net classification (Wang & Golland 2022): the train point set × test point set × resolution table,
with the NUFT and grid CNN-4 baselines trained alike; table.csv, table.png and commands.txt into --out.

    python benchmarks/protocols/dinet_classification.py --out OUT                  # sample:digits, all of it
    python benchmarks/protocols/dinet_classification.py --source DIR --image-size 32 --out OUT   # your images
    python benchmarks/protocols/dinet_classification.py --smoke --out OUT

The paper's tables (reference/dinet.md) train DI-Net-2/4 on QMC, grid or shrunk points at 32² and test on
each (QMC → QMC 32.9% top-1 on 12 ImageNet superclasses) and on grids of 16² to 96²; CNN-2/4 read grids
only. Here: one store of fitted fields (`--field`, SIREN by default), DI-Net trained once per
`--train-points` set, `nuft` (density-compensated NUFFT → CNN-4, the exact DFT backend) on the first of
them, `cnn4` on grids, all with the same steps, batch, points per field and seed; one `fieldlab eval` per
run on the test split at every point set and `--resolutions`. The network defaults are those chosen on a
validation split (BENCHMARKS.md, issue 20), not on this table's test split.
"""

from __future__ import annotations

import _learn as L
import _protocol as P


def main() -> None:
    p = P.parser(__doc__)
    L.add_options(p, source="sample:digits", resolutions="8,16,32", num_points=256)
    p.add_argument("--nets", default="dinet", help="DI-Nets to train (dinet = DI-Net-4, dinet2)")
    p.add_argument("--train-points", default="qmc,grid,shrunk", help="a DI-Net run per training point set")
    p.add_argument("--baselines", default="nuft,cnn4", help="nuft, cnn4, cnn2 (empty: none)")
    args = p.parse_args()
    small = []
    if args.smoke:
        L.smoke(args, source="sample:digits", limit=60)
        args.train_points, args.resolutions, args.num_points = "qmc", "4,8", 16
        small = ["--channels", 4]
    proto = P.Protocol(args)
    store = L.fit_store(proto, args)
    first = args.train_points.split(",")[0]
    nets = [L.Net(n, points, tuple(small)) for n in args.nets.split(",") for points in args.train_points.split(",")]
    for base in filter(None, args.baselines.split(",")):
        if base == "nuft":
            nets.append(L.Net("nuft", first, ("--backend", "exact", *small)))
        else:  # a grid CNN reads grids only
            nets.append(L.Net(base, "grid", tuple(small), test_points="grid"))
    L.run_table(proto, args, store, nets, "DI-Net classification: test accuracy by point set and resolution",
                "test accuracy (%)")


if __name__ == "__main__":
    main()
