"""The invariance table of `fieldlab eval`: every (store × point set × resolution) cell's drop from the training
cell, the two gap summaries, and their text, eval.csv, eval.json and eval.png.

A row is a dict {store, field, train, test, resolution, points, accuracy, metric, draws} (`evaluate.py`);
`accuracy` holds the metric named in `metric` (accuracy, miou or sdf_mae) and is None where the network
cannot read the point set. A *drop* is how much worse a cell is than the training cell, in the direction and
unit the task's `Metric` declares (`fieldlab.learn.task`, carried by the `TrainingCell`): in points (100 × the
fraction) for accuracy and mIoU, in SDF units for sdf_mae, whose error rising is a drop.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

from fieldlab.learn.task import Metric

CSV_COLUMNS = ["store", "field", "train", "test", "resolution", "points", "accuracy", "metric", "draws", "drop"]


@dataclasses.dataclass(frozen=True)
class TrainingCell:
    """Where the run was trained: the point set as scored (a mixed run's first mix member among the test
    point sets), the resolution (grid side) whose side^d points are nearest the training count, and the
    store whose block every drop is measured against."""

    points: str
    resolution: int
    count: int
    """Points per field in training (`--num-points`)."""
    dim: int
    store: str
    trained_on_store: bool
    """Whether `store` is the store RUN trained on (else it is the first STORE given)."""
    metric: Metric
    """What the rows' `accuracy` column holds, as the run's task declares it (its direction and unit)."""


def drop(value: float, reference: float, metric: Metric) -> float:
    """How much worse `value` is than `reference` by `metric`'s direction: points of a fraction lost (or
    gained, for one where lower is better), or the value's own units."""
    worse = reference - value if metric.higher_is_better else value - reference
    return 100 * worse if metric.fraction else worse


def _value(rows: list[dict], store: str, kind: str, side: int) -> float | None:
    return next((r["accuracy"] for r in rows if (r["store"], r["test"], r["resolution"]) == (store, kind, side)), None)


def add_drops(rows: list[dict], cell: TrainingCell) -> None:
    """Set every row's `drop` against the training cell (None where either is unmeasured)."""
    reference = _value(rows, cell.store, cell.points, cell.resolution)
    for r in rows:
        r["drop"] = None if reference is None or r["accuracy"] is None else drop(r["accuracy"], reference, cell.metric)


def _largest(candidates: list[tuple[float, dict]]) -> tuple[float, dict] | None:
    return max(candidates, key=lambda c: c[0]) if candidates else None


def point_set_gap(rows: list[dict], cell: TrainingCell) -> dict[str, Any]:
    """Largest drop from the training point set to any other point set at the training resolution, on the
    training store's fields: {value, from, to, resolution}, or {value: None, why}."""
    missing = _missing_cell(rows, cell)
    if missing:
        return {"value": None, "why": missing}
    reference = _value(rows, cell.store, cell.points, cell.resolution)
    others = [(drop(r["accuracy"], reference, cell.metric), r) for r in rows if r["store"] == cell.store and
              r["resolution"] == cell.resolution and r["test"] != cell.points and r["accuracy"] is not None]
    best = _largest(others)
    if best is None:
        return {"value": None, "why": f"the network reads only {cell.points} among --points"}
    return {"value": best[0], "from": cell.points, "to": best[1]["test"], "resolution": cell.resolution}


def resolution_gap(rows: list[dict], cell: TrainingCell, kinds: list[str] | None = None) -> dict[str, Any]:
    """Largest drop from the training resolution to any other resolution, for each point set of `kinds`
    (default: the training point set) measured against that point set's own cell at the training resolution:
    {value, points, from, to} or {value: None, why}. Over every point set the network reads, a set that
    collapses at other resolutions (grids, for a grid CNN or a DI-Net that learnt their spacing) shows even when
    the training point set holds up."""
    missing = _missing_cell(rows, cell) if kinds is None else _missing_resolution(rows, cell)
    if missing:
        return {"value": None, "why": missing}
    mine = [r for r in rows if r["store"] == cell.store and r["accuracy"] is not None]
    candidates = []
    for kind in [cell.points] if kinds is None else kinds:
        base = _value(mine, cell.store, kind, cell.resolution)
        if base is not None:
            candidates += [(drop(r["accuracy"], base, cell.metric), r) for r in mine
                           if r["test"] == kind and r["resolution"] != cell.resolution]
    best = _largest(candidates)
    if best is None and any(r.get("time_limit") for r in rows):
        return {"value": None, "why": "the other resolutions were not measured within --max-seconds"}
    if best is None:
        return {"value": None, "why": "one resolution only; give --resolutions with others beside "
                                      f"{cell.resolution}"}
    return {"value": best[0], "points": best[1]["test"], "from": cell.resolution, "to": best[1]["resolution"]}


def _missing_resolution(rows: list[dict], cell: TrainingCell) -> str | None:
    if cell.resolution not in {r["resolution"] for r in rows}:
        return f"the training resolution, {cell.resolution}, is not among --resolutions"
    return None


def _missing_cell(rows: list[dict], cell: TrainingCell) -> str | None:
    """Why the training cell has no score, or None when it has one."""
    if cell.points not in {r["test"] for r in rows}:
        return f"the training point set, {cell.points}, is not among --points"
    if _missing_resolution(rows, cell):
        return _missing_resolution(rows, cell)
    if _value(rows, cell.store, cell.points, cell.resolution) is None:
        if any(r.get("time_limit") for r in rows if (r["store"], r["test"], r["resolution"]) ==
               (cell.store, cell.points, cell.resolution)):
            return "the training cell was not measured within --max-seconds"
        return f"the network cannot read the training point set, {cell.points}"
    return None


def store_summary(rows: list[dict], cell: TrainingCell) -> list[dict[str, Any]]:
    """Per store: its score at the training cell, the drop from the training store's, and its largest drop
    over every cell: "train on X fields → test on Y fields"."""
    out = []
    for store in dict.fromkeys(r["store"] for r in rows):
        block = [r for r in rows if r["store"] == store]
        drops = [r["drop"] for r in block if r["drop"] is not None]
        at_cell = next((r for r in block if (r["test"], r["resolution"]) == (cell.points, cell.resolution)), None)
        out.append({"store": store, "field": block[0]["field"], "value": at_cell and at_cell["accuracy"],
                    "drop": at_cell and at_cell["drop"], "largest_drop": max(drops) if drops else None})
    return out


def summarize(rows: list[dict], cell: TrainingCell) -> dict[str, Any]:
    """Everything eval.json holds beside the cells: the training cell, both gaps, the per-store summary."""
    read = list(dict.fromkeys(r["test"] for r in rows if r["store"] == cell.store and r["accuracy"] is not None))
    return {
        "metric": cell.metric.name, "lower_is_better": not cell.metric.higher_is_better, "unit": cell.metric.unit,
        "training_cell": {**_where(cell), "value": _value(rows, cell.store, cell.points, cell.resolution)},
        "point_set_gap": point_set_gap(rows, cell),
        "resolution_gap": resolution_gap(rows, cell),
        "resolution_gap_any_point_set": resolution_gap(rows, cell, read),
        "stores": store_summary(rows, cell),
    }


def _where(cell: TrainingCell) -> dict[str, Any]:
    """The cell's place (eval.json's training_cell; the metric is given beside it)."""
    return {f.name: getattr(cell, f.name) for f in dataclasses.fields(cell) if f.name != "metric"}


def _number(value: float, metric: Metric) -> str:
    """A drop (or a value) of `metric`: points to one decimal, else its own units to four."""
    return f"{value:.1f}" if metric.fraction else f"{value:.4f}"


def _shown(value: float, metric: Metric) -> str:
    return f"{100 * value:.1f}%" if metric.fraction else f"{value:.4f}"


def _cell(row: dict, cell: TrainingCell) -> str:
    value, metric = row["accuracy"], cell.metric
    if value is None:
        return "time limit" if row.get("time_limit") else "n/a"
    shown = _shown(value, metric)
    if (row["store"], row["test"], row["resolution"]) == (cell.store, cell.points, cell.resolution):
        return f"{shown} *"
    if row["drop"] is None:
        return shown
    # the change in the metric's own direction (an error that rises shows +); -0.0 shows as +
    change = -row["drop"] if metric.higher_is_better else row["drop"]
    return f"{shown} ({'+' if change >= 0 else '-'}{_number(abs(change), metric)})"


def store_label(row: dict) -> str:
    return f"{row['field']} fields of {row['store']}" if row.get("field") else str(row["store"])


def legend(rows: list[dict], cell: TrainingCell) -> str:
    cut = "; 'time limit': not measured within --max-seconds" if any(r.get("time_limit") for r in rows) else ""
    return (f"metric: {cell.metric.describe()}; * marks the training cell, brackets the "
            f"change from it ({cell.metric.unit}){cut}")


def format_table(rows: list[dict], cell: TrainingCell) -> str:
    """One block of rows per store (train → test point set), one column per resolution."""
    if not rows:
        return ""
    sides = list(dict.fromkeys(r["resolution"] for r in rows))
    counts = {r["resolution"]: r["points"] for r in rows}
    lookup = {(r["store"], r["test"], r["resolution"]): r for r in rows}
    lines = [f"{'train → test':<24}" + "".join(f"{f'{counts[s]} pts':>17}" for s in sides)]
    for store in dict.fromkeys(r["store"] for r in rows):
        block = [r for r in rows if r["store"] == store]
        trained = " (RUN trained on these)" if store == cell.store and cell.trained_on_store else ""
        lines.append(f"[{store_label(block[0])}{trained}]")
        for kind in dict.fromkeys(r["test"] for r in block):
            cells = [_cell(lookup[(store, kind, s)], cell) for s in sides]
            label = f"{block[0]['train']} → {kind}"
            lines.append(f"{label:<24}" + "".join(f"{c:>17}" for c in cells))
    return "\n".join(lines)


def format_summary(rows: list[dict], cell: TrainingCell, summary: dict[str, Any]) -> str:
    """The lines printed under the table: the training cell, both gaps, and (several stores) train → test."""
    gap = summary["point_set_gap"]
    lines = [_gap_line(f"invariance gap across point sets at {cell.resolution ** cell.dim} pts", gap, cell.metric,
                       lambda g: f"{g['from']} → {g['to']}")]
    for key, what in (("resolution_gap", f"{cell.points}"), ("resolution_gap_any_point_set", "any point set read")):
        lines.append(_gap_line(f"invariance gap across resolutions, {what}", summary[key], cell.metric,
                               lambda g: f"{g['points']}, {g['from'] ** cell.dim} → {g['to'] ** cell.dim} pts"))
    stores = summary["stores"]
    if len(stores) > 1:
        reference = next(s for s in stores if s["store"] == cell.store)
        lines += [_store_line(reference, s, cell.metric) for s in stores]
        worst = max((s for s in stores if s["store"] != cell.store and s["drop"] is not None),
                    key=lambda s: s["drop"], default=None)
        if worst is not None and cell.metric.higher_is_better and worst["drop"] > TRANSFER_DROP:
            lines.append(f"{worst['field']} fields ({worst['store']}) read {_number(worst['drop'], cell.metric)} "
                         f"{cell.metric.unit} lower at the training cell: another architecture's fields differ "
                         "between the samples; train --jitter (e.g. 0.24, about a quarter of a sample spacing) teaches "
                         "a network to tolerate that (README)")
    return "\n".join(lines)


TRANSFER_DROP = 3.0
"""A store of another architecture that reads more than this many points lower than the training store at the
training cell gets a line naming `train --jitter` (issue 20's transfer target: within 3 points; on the digits
`--jitter 0.24`, 0.06 of the domain, brought spatial functa's 4.0 to 0.4, BENCHMARKS.md)."""


def _store_line(reference: dict, s: dict, metric: Metric) -> str:
    head = f"train on {reference['field']} fields ({reference['store']}) → test on {s['field']} fields ({s['store']})"
    if s["value"] is None or s["drop"] is None:
        return f"{head}: not measured at the training cell"
    worst = "" if s["largest_drop"] is None else f"; largest drop over its cells {_number(s['largest_drop'], metric)}"
    return (f"{head}: {_shown(s['value'], metric)} at the training cell, drop {_number(s['drop'] + 0.0, metric)} "
            f"{metric.unit}{worst}")


def _gap_line(head: str, gap: dict, metric: Metric, where) -> str:
    if gap["value"] is None:
        return f"{head}: not measured ({gap['why']})"
    return f"{head}: {_number(gap['value'], metric)} {metric.unit} ({where(gap)})"


# -- files ---------------------------------------------------------------------------------------------
def write_csv(rows: list[dict], path: Path) -> None:
    from fieldlab._safety import replace_file

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    replace_file(path, write)


def write_json(rows: list[dict], summary: dict[str, Any], path: Path) -> None:
    """eval.json: {"cells": every row with its drop, **summary}."""
    from fieldlab._safety import replace_file

    text = json.dumps({"cells": [{k: r.get(k) for k in CSV_COLUMNS} for r in rows], **summary}, indent=2)
    replace_file(path, lambda tmp: tmp.write_text(text))


def write_plot(rows: list[dict], cell: TrainingCell, summary: dict[str, Any], path: Path) -> bool:
    """A heat map of the metric per store (point sets × resolutions), each cell annotated with its change from
    the training cell (framed), both gaps in the title; False when matplotlib is missing. Written as fieldlab's
    other pictures (`plots.save`): under a temporary name, then renamed, at zlib's fastest level."""
    from fieldlab import plots

    plt = plots.pyplot("eval.png")
    if plt is None:
        return False
    import numpy as np

    stores = list(dict.fromkeys(r["store"] for r in rows))
    kinds = list(dict.fromkeys(r["test"] for r in rows))
    sides = list(dict.fromkeys(r["resolution"] for r in rows))
    lower, scale = not cell.metric.higher_is_better, 100 if cell.metric.fraction else 1
    lookup = {(r["store"], r["test"], r["resolution"]): r for r in rows}
    values = [scale * r["accuracy"] for r in rows if r["accuracy"] is not None]
    fig, axes = plt.subplots(len(stores), 1, figsize=(1.6 * len(sides) + 3, 0.5 * len(kinds) * len(stores) + 1.6),
                             squeeze=False)
    for ax, store in zip(axes[:, 0], stores):
        cells = [[lookup[(store, k, s)]["accuracy"] for s in sides] for k in kinds]
        grid = np.array([[np.nan if a is None else scale * a for a in row] for row in cells])
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r" if lower else "viridis", aspect="auto",
                          vmin=min(values, default=0), vmax=max(values, default=1))
        for i, kind in enumerate(kinds):
            for j, side in enumerate(sides):
                ax.text(j, i, _plot_label(lookup[(store, kind, side)], cell), ha="center", va="center", fontsize=7,
                        color="0.35" if np.isnan(grid[i, j]) else "black",
                        bbox=None if np.isnan(grid[i, j]) else dict(boxstyle="round", fc="white", alpha=0.6, lw=0))
        if store == cell.store and cell.points in kinds and cell.resolution in sides:
            ax.add_patch(plt.Rectangle((sides.index(cell.resolution) - 0.5, kinds.index(cell.points) - 0.5), 1, 1,
                                       fill=False, edgecolor="red", lw=2))
        ax.set_xticks(range(len(sides)), [f"{s}^{cell.dim} = {s ** cell.dim}" for s in sides])
        ax.set_yticks(range(len(kinds)), [f"{rows[0]['train']} → {k}" for k in kinds])
        ax.set_title(store_label(lookup[(store, kinds[0], sides[0])]), fontsize=9)
        ax.set_facecolor("0.85")
        fig.colorbar(image, ax=ax, label=cell.metric.axis())
    axes[-1, 0].set_xlabel("resolution (points per field)")
    fig.suptitle(f"trained on {rows[0]['train']}: {_plot_title(summary, cell.metric)}", fontsize=8)
    fig.tight_layout()
    plots.save(fig, plt, path)
    return True


def _plot_label(row: dict, cell: TrainingCell) -> str:
    text = _cell(row, cell)
    return text.replace(" (", "\n(").replace(" *", "\n(train)")


def _plot_title(summary: dict[str, Any], metric: Metric) -> str:
    def show(gap: dict) -> str:
        return "not measured" if gap["value"] is None else f"{_number(gap['value'], metric)} {metric.unit}"

    return (f"point-set gap {show(summary['point_set_gap'])} · resolution gap {show(summary['resolution_gap'])} "
            f"(training set), {show(summary['resolution_gap_any_point_set'])} (any set read)")
