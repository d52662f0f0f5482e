"""DI-Net segmentation (Wang & Golland 2022) on sample:shapes: mIoU by test point set and resolution for
DI-Net-3 against FCN-3 and the NUFT segmenter, trained alike; table.csv, table.png and commands.txt into --out.

    python benchmarks/protocols/dinet_segmentation.py --out OUT                    # sample:shapes:2000
    python benchmarks/protocols/dinet_segmentation.py --source masks.npz --out OUT  # images + a masks array
    python benchmarks/protocols/dinet_segmentation.py --smoke --out OUT

The paper segments Cityscapes fields (7 classes, 48×96 points) and reports mIoU only in figures
(reference/dinet.md: its table could not be read), so this protocol is ours: 16×16 scenes of discs,
squares and triangles with per-pixel masks, every network trained with the same steps, batch, points and
seed on the train split and scored by one `fieldlab eval` each (mIoU over the test split).
"""

from __future__ import annotations

import _learn as L
import _protocol as P


def main() -> None:
    p = P.parser(__doc__)
    L.add_options(p, source="sample:shapes:2000", resolutions="8,16,32", num_points=256)
    p.add_argument("--nets", default="dinet3,fcn3,nuft_seg", help="segmenters to train")
    p.add_argument("--train-points", default="qmc", help="training point set of the point-set networks")
    p.add_argument("--test-points", default="grid,qmc,shrunk")
    args = p.parse_args()
    small = []
    if args.smoke:
        L.smoke(args, source="sample:shapes:40", limit=0)
        args.resolutions, args.num_points = "4,8", 16
        small = ["--channels", 4]
    proto = P.Protocol(args)
    store = L.fit_store(proto, args)
    nets = []
    for name in args.nets.split(","):
        options = (*small, "--backend", "exact") if name == "nuft_seg" else tuple(small)
        nets.append(L.Net(name, args.train_points, options, test_points=args.test_points))
    L.run_table(proto, args, store, nets, "segmentation of sample:shapes: test mIoU by point set and resolution",
                "test mIoU (%)")


if __name__ == "__main__":
    main()
