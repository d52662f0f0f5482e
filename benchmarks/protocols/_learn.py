"""What the DI-Net protocols share: one store fitted once, every network trained on its train split with
the same steps, batch, points per field and seed, and every run scored by one `fieldlab eval` on the same
test split, point sets, resolutions and draws (rule 1 of BENCHMARKS.md's comparisons); the eval.csv rows of
every run become one table.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

import _protocol as P

POINT_SETS = "grid,qmc,rqmc,random,shrunk"


@dataclass(frozen=True)
class Net:
    """One `fieldlab train` run: a network, its training point set and its own options."""

    name: str
    points: str
    options: tuple = field(default_factory=tuple)
    test_points: str = POINT_SETS

    @property
    def label(self) -> str:
        return f"{self.name} ({self.points})"


def add_options(p, *, source: str, resolutions: str, num_points: int) -> None:
    p.add_argument("--source", default=source, help="a labelled fit-dataset source")
    p.add_argument("--store", default="", help="a store fitted already (skips fit-dataset)")
    p.add_argument("--field", default="siren", help="the store's architecture")
    p.add_argument("--limit", type=int, default=0, help="fit only the first N items (0: all)")
    p.add_argument("--image-size", type=int, default=0, help="resize a folder's images to this square size")
    p.add_argument("--fit-steps", type=int, default=300)
    p.add_argument("--steps", type=int, default=600, help="training steps of every network")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-points", type=int, default=num_points, help="points per field per training step")
    p.add_argument("--resolutions", default=resolutions, help="eval's grid sides")
    p.add_argument("--draws", type=int, default=5, help="eval's draws of each randomized point set")


def smoke(args, *, source: str, limit: int) -> None:
    args.source, args.limit, args.fit_steps = source, limit, 10
    args.steps, args.batch_size, args.draws = 4, 16, 1
    args.device = "cpu" if args.device == "auto" else args.device


def fit_store(proto, args) -> str:
    if args.store:
        P.require_path(args.store, "the store", "give a folder written by fieldlab fit-dataset")
        return args.store
    P.require_path(args.source, "the dataset",
                   "give a fit-dataset source (a folder of class folders, .npz, sample:NAME)")
    store = proto.out / "store"
    fit = ["fit-dataset", args.source, "--field", args.field, "--steps", args.fit_steps, "--seed", args.seed,
           "--device", args.device, "--out", store, "--force"]
    fit += ["--limit", args.limit] if args.limit else []
    fit += ["--image-size", args.image_size] if args.image_size else []
    fit += ["--quiet"] if args.smoke else []
    proto.fieldlab(*fit)
    return str(store)


def run_table(proto, args, store: str, nets: list[Net], title: str, ylabel: str) -> None:
    """The protocol's whole table: every net trained and evaluated alike, then its CSV and plot."""
    rows = train_and_eval(proto, args, store, nets)
    proto.table(rows, COLUMNS)
    plot(proto, rows, args.device, title, ylabel)


def train_and_eval(proto, args, store: str, nets: list[Net]) -> list[dict]:
    """Train every net alike, eval each on the same store; their eval.csv rows, labelled by net."""
    rows = []
    for net in nets:
        run = proto.out / f"run-{net.name}-{net.points}"
        train = ["train", store, "--net", net.name, *net.options, "--points", net.points,
                 "--num-points", args.num_points, "--steps", args.steps, "--batch-size", args.batch_size,
                 "--seed", args.seed, "--device", args.device, "--out", run, "--force", "--quiet"]
        proto.fieldlab(*train)
        proto.fieldlab("eval", run, store, "--points", net.test_points, "--resolutions", args.resolutions,
                       "--draws", args.draws, "--device", args.device)
        with (run / "eval.csv").open() as f:
            for cell in csv.DictReader(f):
                if cell["accuracy"] == "":  # a point set this network cannot read
                    continue
                rows.append({"net": net.name, "train": cell["train"], "test": cell["test"],
                             "resolution": int(cell["resolution"]), "points": int(cell["points"]),
                             "metric": cell["metric"], "value": P.rounded(100 * float(cell["accuracy"])),
                             "drop": P.rounded(100 * float(cell["drop"])) if cell["drop"] else "",
                             "draws": int(cell["draws"]),
                             "steps": args.steps, "device": P.device_name(args.device)})
    return rows


COLUMNS = ["net", "train", "test", "resolution", "points", "metric", "value", "drop", "draws", "steps", "device"]


def plot(proto, rows, device, title, ylabel) -> None:
    """One panel per run: its score against the test resolution, a line per test point set."""
    plt = proto.figure()
    runs = list(dict.fromkeys((r["net"], r["train"]) for r in rows))
    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3), sharey=True, squeeze=False)
    for ax, (net, train) in zip(axes[0], runs):
        mine = [r for r in rows if (r["net"], r["train"]) == (net, train)]
        for test in dict.fromkeys(r["test"] for r in mine):
            cells = sorted((r["resolution"], r["value"]) for r in mine if r["test"] == test)
            ax.plot(*zip(*cells), marker="o", label=test)
        ax.set_title(f"{net}, trained {train}", fontsize=8)
        ax.set_xlabel("test resolution (grid side)", fontsize=8)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel, fontsize=8)
    proto.save(fig, title, device)
