"""`fieldlab eval RUN STORE`: accuracy (mIoU, SDF error) for every test discretization and resolution.

Resolutions are grid sides: at side s every point set gets s^d points, so a grid and a QMC set at one
resolution hold the same number of points. The table's first column names the run's training point set,
so tables of several runs (trained on grid, QMC, shrunk, …) read as train → test, as in DI-Net's.
For a segmenter the number in the `accuracy` column is the mIoU over the test set, for an SDF run (`fieldlab
train-sdf`, no STORE needed) the mean absolute SDF error of the held-out scenes (`metric` says which).
The invariance gap is the largest drop from the training point set's accuracy to any other point set's
at the same resolution.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from fieldlab._errors import UserError
from fieldlab._progress import phase
from fieldlab.learn.field_batch import FieldEvaluator
from fieldlab.learn.points import KINDS, PointSampler
from fieldlab.fit.loop import resolve_device
from fieldlab.learn.train import load_run, load_split, read_run, score, split_rows


RANDOMIZED = ("rqmc", "random", "shrunk")
"""Point sets drawn afresh from a seed; grid and qmc are fixed."""
DRAWS = 5


def scoring_samplers(kind: str, n: int, dim: int, *, seed: int, draws: int,
                     sequence: str = "sobol") -> list[PointSampler]:
    """The samplers a test point set is scored over: `draws` independently seeded ones for a randomized
    set, the one fixed set otherwise."""
    count = draws if kind in RANDOMIZED else 1
    return [PointSampler(kind=kind, n=n, dim=dim, sequence=sequence, seed=seed + 7919 * k) for k in range(count)]


def evaluate(run: str | Path, store_path: str | Path | None, *, points: Sequence[str],
             resolutions: Sequence[int] | None = None, device: str = "auto", seed: int = 1,
             draws: int = DRAWS, progress: bool = False) -> list[dict]:
    """Rows {train, test, resolution, points, accuracy, metric, draws} (accuracy None where a net cannot see
    a point set; for an SDF run (`train-sdf`) it holds the mean absolute SDF error, metric "sdf_mae").
    A randomized point set (rqmc, random, shrunk) is scored as the mean over `draws` independent draws: one
    draw for a small test set moves the score by many points. `progress`: a bar over the scorings (one
    pass over the test set each), else a log line."""
    from fieldlab.learn.sdf import FORMAT as SDF_FORMAT, evaluate_sdf
    from fieldlab.store.field_store import FieldStore

    for kind in points:
        if kind not in KINDS or kind == "mixed":
            raise UserError(f"unknown point set {kind!r}; choose from grid, qmc, rqmc, random, shrunk")
    if draws < 1:
        raise UserError(f"--draws must be positive, got {draws}")
    if resolutions and any(r < 2 for r in resolutions):
        raise UserError(f"--resolutions are grid sides of at least 2, got {list(resolutions)}")
    dev = resolve_device(device)
    info = read_run(run)
    if info.get("format") == SDF_FORMAT:
        return evaluate_sdf(info, Path(run), store_path, points=points, resolutions=resolutions, device=dev,
                            seed=seed, draws=draws)
    if store_path is None:
        raise UserError(f"eval of {run} needs the STORE to test on")
    store = FieldStore(store_path)
    net, cfg, info = load_run(run, store)
    dim = store.signal.in_dim
    train_cfg = info["train"]
    if not resolutions:
        resolutions = [round(train_cfg["num_points"] ** (1 / dim))]
    net = net.to(dev)
    _, test_rows, _ = split_rows(store)
    test = load_split(store, test_rows, dev, masks=cfg.task == "segment")
    metric = "miou" if cfg.task == "segment" else "accuracy"
    evaluator = FieldEvaluator.from_store(store)
    # segmenters answer at any points (FCNs query their logit image, hypernetworks are fields);
    # a grid CNN classifier sees only grids, and a classifier of weights sees no points at all
    seen = [kind for kind in points if cfg.takes == "points" or cfg.task == "segment" or
            (cfg.takes == "grid" and kind == "grid") or (cfg.takes == "params" and kind == points[0])]
    total = len(resolutions) * sum(draws if kind in RANDOMIZED else 1 for kind in seen)
    rows = []
    with phase(f"scoring {len(test_rows):,} test fields", total, unit="scoring", bar=progress) as advance:
        for side in resolutions:
            for kind in points:
                acc, samplers = None, []
                if kind in seen:
                    samplers = scoring_samplers(kind, side ** dim, dim, seed=seed, draws=draws,
                                                sequence=train_cfg["sequence"])
                    scores = []
                    for sampler in samplers:
                        scores.append(score(net, cfg, evaluator, test, sampler, info["classes"]))
                        advance(1)
                    acc = sum(scores) / len(scores)
                trained = "weights" if cfg.takes == "params" else f"{train_cfg['points']}@{train_cfg['num_points']}"
                rows.append({"train": trained, "test": kind,
                             "resolution": side, "points": side ** dim, "accuracy": acc, "metric": metric,
                             "draws": len(samplers)})
    return rows


def metric_of(rows: list[dict]) -> str:
    """What the rows' `accuracy` column holds: accuracy, miou or sdf_mae (one metric per table)."""
    return rows[0].get("metric", "accuracy") if rows else "accuracy"


def invariance_gap(rows: list[dict], train_kind: str) -> float | None:
    """Largest accuracy drop (points) from the training point set to any other, at equal resolution; for
    SDF rows, the largest rise of the error (in SDF units)."""
    lower_better = metric_of(rows) == "sdf_mae"
    gaps = []
    for side in {r["resolution"] for r in rows}:
        same = {r["test"]: r["accuracy"] for r in rows if r["resolution"] == side and r["accuracy"] is not None}
        if train_kind in same:
            gaps += [acc - same[train_kind] if lower_better else 100 * (same[train_kind] - acc) for acc in same.values()]
    return max(gaps) if gaps else None


def _cell(value: float | None, metric: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if metric == "sdf_mae" else f"{100 * value:.1f}%"


def format_table(rows: list[dict]) -> str:
    kinds = list(dict.fromkeys(r["test"] for r in rows))
    sides = list(dict.fromkeys(r["resolution"] for r in rows))
    lookup = {(r["test"], r["resolution"]): r["accuracy"] for r in rows}
    train = rows[0]["train"] if rows else ""
    counts = {r["resolution"]: r["points"] for r in rows}
    metric = metric_of(rows)
    head = f"{'train → test':<22}" + "".join(f"{f'{counts[s]} pts':>12}" for s in sides)
    lines = [head]
    for kind in kinds:
        cells = [_cell(lookup[(kind, s)], metric) for s in sides]
        lines.append(f"{f'{train} → {kind}':<22}" + "".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    from fieldlab._safety import replace_file

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["train", "test", "resolution", "points", "accuracy", "metric",
                                                   "draws"], restval="")
            writer.writeheader()
            writer.writerows(rows)

    replace_file(path, write)


def write_plot(rows: list[dict], path: Path) -> bool:
    """Accuracy against resolution, one line per test point set; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    metric = metric_of(rows)
    scale = 1 if metric == "sdf_mae" else 100
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kind in dict.fromkeys(r["test"] for r in rows):
        pts = [(r["resolution"], scale * r["accuracy"]) for r in rows if r["test"] == kind and r["accuracy"] is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=kind)
    ax.set_xlabel("resolution (grid side)")
    ax.set_ylabel({"sdf_mae": "test SDF mean absolute error", "miou": "test mIoU (%)"}.get(metric, "test accuracy (%)"))
    ax.set_title(f"trained on {rows[0]['train']}" if rows else "")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
