"""`fieldlab eval RUN STORE [STORE ...]`: accuracy (mIoU, SDF error) for every store, test discretization and
resolution, measured against the training cell (`fieldlab.learn._eval_report`).

Resolutions are grid sides: at side s every point set gets s^d points, so a grid and a QMC set at one
resolution hold the same number of points. The table's first column names the run's training point set,
so tables of several runs (trained on grid, QMC, shrunk, …) read as train → test, as in DI-Net's.
For a segmenter the number in the `accuracy` column is the mIoU over the test set, for an SDF run (`fieldlab
train-sdf`, no STORE needed) the mean absolute SDF error of the held-out scenes (`metric` says which).
Several stores of the same signals (fitted as other field types, or with other seeds) give a block of rows
each; drops are measured from the training cell of the store RUN trained on (else the first STORE).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from fieldlab import _deadline
from fieldlab import _validate as v
from fieldlab._errors import UserError
from fieldlab._memory import keep_freed_blocks
from fieldlab._progress import phase
from fieldlab.learn.field_batch import FieldEvaluator
from fieldlab.learn.points import KINDS, PointSampler
from fieldlab.fit.loop import resolve_device
from fieldlab.learn._eval_report import (TrainingCell, add_drops, format_summary, format_table,
                                        legend, summarize, write_csv, write_json, write_plot)
from fieldlab.learn.store_tasks import load_split, split_rows, store_task
from fieldlab.learn.task import Metric
from fieldlab.learn.train import load_run, read_run

__all__ = ["evaluate", "evaluate_table", "format_summary", "format_table", "legend",
           "scoring_samplers", "summarize", "training_cell", "write_csv", "write_json", "write_plot"]


RANDOMIZED = ("rqmc", "random", "shrunk")
"""Point sets drawn afresh from a seed; grid and qmc are fixed."""
DRAWS = 5


def scoring_samplers(kind: str, n: int, dim: int, *, seed: int, draws: int,
                     sequence: str = "sobol") -> list[PointSampler]:
    """The samplers a test point set is scored over: `draws` independently seeded ones for a randomized
    set, the one fixed set otherwise."""
    return list(_draws(kind, n, dim, seed=seed, draws=draws, sequence=sequence))


def _draws(kind: str, n: int, dim: int, *, seed: int, draws: int, sequence: str = "sobol") -> Iterator[PointSampler]:
    """`scoring_samplers`, one at a time (a time limit may stop a large --draws long before its end)."""
    for k in range(draws if kind in RANDOMIZED else 1):
        yield PointSampler(kind=kind, n=n, dim=dim, sequence=sequence, seed=seed + 7919 * k)


def evaluate(run: str | Path, store_path: str | Path | Sequence[str | Path] | None, *, points: Sequence[str],
             resolutions: Sequence[int] | None = None, device: str = "auto", seed: int = 1,
             draws: int = DRAWS, progress: bool = False, max_seconds: float = 0.0) -> list[dict]:
    """Rows {store, field, train, test, resolution, points, accuracy, metric, draws, drop} (accuracy None where
    a net cannot see a point set; for an SDF run (`train-sdf`) it holds the mean absolute SDF error, metric
    "sdf_mae"; drop: how much worse than the training cell, see `fieldlab.learn._eval_report`).
    `store_path`: one store or several stores of the same signals (a block of rows each).
    A randomized point set (rqmc, random, shrunk) is scored as the mean over `draws` independent draws: one
    draw for a small test set moves the score by many points. `progress`: a bar over the scorings (one
    pass over the test set each), else a log line. `max_seconds` (0: none) bounds the command (from its
    start, leaving the limit's reserve for writing the tables): the training resolution is scored first, a
    cell the limit leaves unscored has accuracy None and `time_limit` True, and a randomized set may be
    averaged over fewer draws (its `draws`)."""
    return evaluate_table(run, store_path, points=points, resolutions=resolutions, device=device, seed=seed,
                          draws=draws, progress=progress, max_seconds=max_seconds)[0]


def evaluate_table(run: str | Path, store_path: str | Path | Sequence[str | Path] | None, *, points: Sequence[str],
                   resolutions: Sequence[int] | None = None, device: str = "auto", seed: int = 1,
                   draws: int = DRAWS, progress: bool = False,
                   max_seconds: float = 0.0) -> tuple[list[dict], TrainingCell]:
    """`evaluate`'s rows with their drops, and the training cell they are measured against."""
    from fieldlab.fit.config import MAX_SECONDS

    v.bounded_float(max_seconds or 0.0, "--max-seconds", 0, MAX_SECONDS)
    with _deadline.limit(max_seconds) as deadline:  # from the command's start
        rows, cell = _evaluate_table(run, store_path, points, resolutions, device, seed, draws, progress)
        skipped = sum(1 for r in rows if r.get("time_limit"))
        fewer = sum(1 for r in rows if r["test"] in RANDOMIZED and 0 < r["draws"] < draws)
        if skipped or fewer:
            deadline.cut(f"eval stopped: {skipped} of {len(rows)} cells not measured (marked 'time limit' in the "
                         f"table)" + (f", {fewer} averaged over fewer than {draws} draws" if fewer else ""))
        return rows, cell


def _evaluate_table(run, store_path, points: Sequence[str], resolutions: Sequence[int] | None, device: str,
                    seed: int, draws: int, progress: bool) -> tuple[list[dict], TrainingCell]:
    from fieldlab.learn.sdf import FORMAT as SDF_FORMAT, SDFTask

    for kind in points:
        if kind not in KINDS or kind == "mixed":
            raise UserError(f"unknown point set {kind!r}; choose from grid, qmc, rqmc, random, shrunk")
    if draws < 1:
        raise UserError(f"--draws must be positive, got {draws}")
    if resolutions and any(r < 2 for r in resolutions):
        raise UserError(f"--resolutions are grid sides of at least 2, got {list(resolutions)}")
    stores = [] if store_path is None else [store_path] if isinstance(store_path, (str, Path)) else list(store_path)
    dev = resolve_device(device)
    if dev.type == "cpu":  # batches of the same shapes, cell after cell: keep freed activations (`_memory`)
        keep_freed_blocks()
    info = read_run(run)
    v.check_keys(info, {"train": dict}, f"{run}/run.json")
    v.check_keys(info["train"], {"points": str, "num_points": int}, f"{run}/run.json train",
                 optional={"mix": str, "sequence": str})
    if info.get("format") == SDF_FORMAT:
        rows, dim, trained_on = _evaluate_sdf(info, Path(run), stores, points, resolutions, dev, seed, draws,
                                              progress)
        metric = SDFTask.metric
    else:
        if not stores:
            raise UserError(f"eval of {run} needs the STORE to test on")
        rows, dim, trained_on, metric = _evaluate_stores(Path(run), stores, points, resolutions, dev, seed, draws,
                                                         progress)
    cell = training_cell(info, Path(run), rows, points, dim, trained_on, metric)
    add_drops(rows, cell)
    return rows, cell


def training_cell(info: dict, run: Path, rows: list[dict], points: Sequence[str], dim: int,
                  trained_on: str | None, metric: Metric) -> TrainingCell:
    """The cell every drop is measured from: the run's training point set (a mixed run's first mix member
    among `points`; a network of weights: the one point set it is scored at) at the grid side whose side^d
    points are nearest the training count, on the store RUN trained on (else the first STORE)."""
    train = info["train"]
    kind = train["points"]
    if kind == "mixed":
        mix = train.get("mix", "").split(",")
        kind = next((k for k in mix if k in points), mix[0])
    if rows and rows[0]["train"] == "weights":
        kind = points[0]
    stores = list(dict.fromkeys(r["store"] for r in rows))
    store = trained_on if trained_on in stores else stores[0]
    return TrainingCell(points=kind, resolution=round(train["num_points"] ** (1 / dim)), count=train["num_points"],
                        dim=dim, store=store, trained_on_store=store == trained_on, metric=metric)


def _evaluate_stores(run: Path, paths: list, points: Sequence[str], resolutions: Sequence[int] | None, dev,
                     seed: int, draws: int, progress: bool) -> tuple[list[dict], int, str | None, Metric]:
    """Rows of a classifier or segmenter on every store, and the metric its task scores them by; every store
    is opened and checked before any scoring."""
    from fieldlab.store.field_store import FieldStore

    trained_on = _trained_store(run)
    opened = []
    for path in paths:
        store = FieldStore(path)
        net, cfg, info = load_run(run, store)
        _, test_rows, _ = split_rows(store)
        if opened:
            _same_signals(opened[0][0], opened[0][1], store, test_rows)
        opened.append((store, test_rows, net, cfg))
    dim = opened[0][0].signal.in_dim
    train_cfg = info["train"]
    if not resolutions:
        resolutions = [round(train_cfg["num_points"] ** (1 / dim))]
    cfg = opened[0][3]
    # segmenters answer at any points (FCNs query their logit image, hypernetworks are fields);
    # a grid CNN classifier sees only grids, and a classifier of weights sees no points at all
    seen = [kind for kind in points if cfg.takes == "points" or cfg.task == "segment" or
            (cfg.takes == "grid" and kind == "grid") or (cfg.takes == "params" and kind == points[0])]
    if not seen:  # only a grid CNN (a classifier of weights takes the first set); a table of n/a cells would
        # replace the run's earlier eval files for nothing
        raise UserError(f"the {cfg.name} network of {run} reads grids only: it cannot be scored at --points "
                        f"{','.join(points)}; add grid to --points")
    total = len(opened) * len(resolutions) * sum(draws if kind in RANDOMIZED else 1 for kind in seen)
    fields = sum(len(test_rows) for _, test_rows, _, _ in opened)
    what = f"scoring {fields:,} test fields" + (f" of {len(opened)} stores" if len(opened) > 1 else "")
    trained = "weights" if cfg.takes == "params" else f"{train_cfg['points']}@{train_cfg['num_points']}"
    labels = _store_labels([store for store, *_ in opened])
    rows = []
    budget = _Budget(_deadline.active())
    with phase(what, total, unit="scoring", bar=progress) as advance:
        for (store, test_rows, net, cfg), label in zip(opened, labels):
            net = net.to(dev)
            test = load_split(store, test_rows, dev, masks=cfg.task == "segment")
            task = store_task(cfg, FieldEvaluator.from_store(store), info["classes"], test)
            metric = task.metric
            cells = {}
            trained_kinds = {train_cfg["points"], *train_cfg.get("mix", "").split(",")}
            for side in _scoring_order(resolutions, round(train_cfg["num_points"] ** (1 / dim))):
                for kind in sorted(points, key=lambda k: k not in trained_kinds):  # the training cell first
                    acc, scores = None, []
                    if kind in seen:
                        for sampler in _draws(kind, side ** dim, dim, seed=seed, draws=draws,
                                              sequence=train_cfg.get("sequence", "sobol")):
                            if not budget.allows(side ** dim):
                                break
                            with budget.timing(side ** dim):
                                scores.append(task.score(net, sampler))
                            advance(1)
                        acc = sum(scores) / len(scores) if scores else None
                    cells[side, kind] = {"accuracy": acc, "draws": len(scores),
                                         **({"time_limit": True} if kind in seen and not scores else {})}
            rows += [{"store": label, "field": store.config.name, "train": trained, "test": kind, "resolution": side,
                      "points": side ** dim, "metric": metric.name, **cells[side, kind]}
                     for side in resolutions for kind in points]
    match = [label for (store, *_), label in zip(opened, labels) if trained_on and _same_path(store.path, trained_on)]
    return rows, dim, match[0] if match else None, metric


def _evaluate_sdf(info: dict, run: Path, paths: list, points, resolutions, dev, seed: int,
                  draws: int, progress: bool = False) -> tuple[list[dict], int, str | None]:
    """Rows of an SDF run: on its recorded scenes (no STORE) or on each STORE, cell by cell (a cell's draws
    together) so that a time limit leaves whole cells unmeasured, the training resolution first."""
    from fieldlab.learn.sdf import SDFTask, evaluate_sdf

    recorded = info["train"].get("store")
    recorded = recorded if isinstance(recorded, str) else None

    def cell(path, side: int | None, kind: str) -> dict:
        return evaluate_sdf(info, run, path, points=[kind], resolutions=[side] if side else None, device=dev,
                            seed=seed, draws=draws)[0]

    paths = paths or [None]
    rows, budget = [], _Budget(_deadline.active())
    total = len(paths) * len(resolutions or [0]) * len(points)
    with phase("scoring the SDF test scenes", total, unit="cell", bar=progress) as advance:
        # the first cell is always scored: it tells the dimension (and, without --resolutions, the training one)
        reference = cell(paths[0], resolutions[0] if resolutions else None, points[0])
        dim = round(math.log(reference["points"]) / math.log(reference["resolution"]))  # points = side^d
        sides = list(resolutions or [reference["resolution"]])
        trained = round(info["train"]["num_points"] ** (1 / dim))
        for path in paths:
            label = str(path if path is not None else recorded or "procedural scenes")
            measured = {}
            for side in _scoring_order(sides, trained):
                for kind in points:
                    cost = (draws if kind in RANDOMIZED else 1) * side ** dim
                    if path is paths[0] and (side, kind) == (reference["resolution"], points[0]):
                        measured[side, kind] = reference
                    elif budget.allows(cost):
                        with budget.timing(cost):
                            measured[side, kind] = cell(path, side, kind)
                    else:
                        continue
                    advance(1)
            for side in sides:
                for kind in points:
                    row = measured.get((side, kind)) or {
                        "train": reference["train"], "test": kind, "resolution": side, "points": side ** dim,
                        "accuracy": None, "metric": SDFTask.metric.name, "draws": 0, "time_limit": True}
                    rows.append({"store": label, "field": "", **row})
    trained_on = next((r["store"] for r in rows if recorded and _same_path(r["store"], recorded)), None)
    return rows, dim, trained_on or (rows[0]["store"] if not paths[0] else None)


def _scoring_order(sides: Sequence[int], trained: int) -> list[int]:
    """The resolutions in the order they are scored: the training resolution first (the cell every drop is
    measured from, and its point-set gap, are what a table cut by a time limit should still hold)."""
    return sorted(sides, key=lambda side: side != trained)


class _Budget:
    """Whether the command's time limit leaves room for one more scoring of `points` points (per field, or
    per scene): each is costed from the last one, per point, and writing the tables keeps the limit's reserve."""

    def __init__(self, deadline: _deadline.Deadline):
        self.deadline, self.per_point = deadline, 0.0

    def allows(self, points: int) -> bool:
        return not self.deadline.out_of_time(1.2 * self.per_point * points + self.deadline.reserve())

    @contextlib.contextmanager
    def timing(self, points: int) -> Iterator[None]:
        tick = time.perf_counter()
        yield
        self.per_point = (time.perf_counter() - tick) / max(points, 1)


def _store_labels(stores: list) -> list[str]:
    """Each store's name in the table: its folder name, its path where two folders share a name."""
    names = [store.path.name for store in stores]
    return [store.path.name if names.count(store.path.name) == 1 else str(store.path) for store in stores]


def _trained_store(run: Path) -> str | None:
    """The store RUN trained on, as its config.json records it (None when it does not)."""
    path = run / "config.json"
    if not path.is_file():
        return None
    store = v.read_json(path, f"{run}/config.json").get("store")
    return store if isinstance(store, str) else None


def _same_path(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def _same_signals(reference, reference_rows: np.ndarray, store, test_rows: np.ndarray) -> None:
    """Refuse a STORE that does not hold the reference STORE's signals: the same signal shape and channels,
    label names and test fields with the same labels (fields of another architecture are fine)."""
    a, b = reference.signal, store.signal
    differs = None
    if tuple(a.shape) != tuple(b.shape) or a.channels != b.channels:
        differs = (f"{'x'.join(map(str, b.shape))} signals with {b.channels} channel(s), not "
                   f"{'x'.join(map(str, a.shape))} with {a.channels}")
    elif list(reference.label_names or []) != list(store.label_names or []):
        differs = "other label names"
    elif len(reference_rows) != len(test_rows):
        differs = f"{len(test_rows):,} test fields, not {len(reference_rows):,}"
    elif not np.array_equal(reference.column("labels")[reference_rows], store.column("labels")[test_rows]):
        differs = "test fields with other labels"
    if differs:
        raise UserError(f"{store.path} holds other signals than {reference.path} ({differs}); eval compares "
                        "stores of the same signals")
