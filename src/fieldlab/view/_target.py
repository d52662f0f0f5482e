"""What a PATH given to `fieldlab view` is: a field DIR, a field store or a training run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fieldlab._errors import UserError
from fieldlab._validate import LIMITS


@dataclass(frozen=True)
class Target:
    kind: str  # "field", "store" or "run"
    path: Path


def find_target(path: Path) -> Target:
    """The kind of `path`, told by the file that describes it; anything else is one UserError."""
    from fieldlab.store.field_store import is_store

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if (path / "field.json").is_file():
        return Target("field", path)
    if path.is_dir() and is_store(path):
        return Target("store", path)
    if (path / "run.json").is_file():
        return Target("run", path)
    raise UserError(f"{path} is no field DIR (field.json), field store (zarr.json) or training run (run.json)")


def read_log(path: Path) -> list[dict]:
    """The records of a log.jsonl (fit's and train's), last record per step; a damaged line ends the curve
    there (a run interrupted mid-line), as the file before it is still good."""
    if not path.is_file() or path.stat().st_size > LIMITS.json_bytes:
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            break
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]


def read_metrics(path: Path) -> dict:
    """metrics.json as a flat dict of its scalars ({} when absent)."""
    from fieldlab._validate import read_json

    if not path.is_file():
        return {}
    return {k: v for k, v in read_json(path, str(path)).items() if isinstance(v, (int, float, str, bool))}


def find_evals(run: Path) -> list[Path]:
    """eval.json files inside a run folder (eval's --out is often RUN/eval), nearest first."""
    return sorted(run.glob("eval.json")) + sorted(run.glob("*/eval.json"))
