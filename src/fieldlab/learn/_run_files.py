"""Reading a training run folder (RUN/run.json, RUN/net.safetensors, RUN/checkpoint.pt) as untrusted input:
types and sizes checked, the network counted on the meta device before it is built, and tensors matched to
the network they are loaded into, each refusal one line and before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from fieldlab import _validate as v
from fieldlab._errors import UserError


def read_run_json(run: Path) -> dict:
    """RUN/run.json as a dict, with its `format` a string."""
    path = Path(run) / "run.json"
    if not path.is_file():
        raise UserError(f"{run} is not a finished training run (no run.json)")
    info = v.read_json(path, f"{run}/run.json")
    return v.check_keys(info, {"format": str}, f"{run}/run.json")


def check_run_info(info: dict, run: Path) -> dict:
    """The keys of a classifier or segmenter run.json that `load_run` and `eval` use, typed and bounded."""
    where = f"{run}/run.json"
    v.check_keys(info, {"net": str, "net_options": dict, "classes": int, "field": str, "in_channels": int,
                        "train": dict}, where, optional={"dim": int, "label_names": list, "metrics": dict})
    v.bounded_int(info["classes"], "classes", 1, v.LIMITS.classes, where=where)
    v.bounded_int(info["in_channels"], "in_channels", 1, v.LIMITS.width, where=where)
    v.bounded_int(info.get("dim", 1), "dim", 1, 8, where=where)
    v.check_keys(info["train"], {"num_points": int}, f"{where} train")
    v.bounded_int(info["train"]["num_points"], "train.num_points", 1, v.LIMITS.samples, where=where)
    if len(info.get("label_names", [])) > v.LIMITS.classes:
        raise UserError(f"{where}: label_names lists {len(info['label_names']):,} names")
    return info


def build_bounded(build: Callable[[], nn.Module], what: str,
                  check: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """`build()` once on the meta device (nothing allocated) to count its parameters against
    `LIMITS.params` and to `check` it (e.g. against the weights it will load), then for real."""
    try:
        with torch.device("meta"):
            shape_only = build()
        count = sum(p.numel() for p in shape_only.parameters())
    except UserError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as error:
        raise UserError(f"{what} cannot be built ({type(error).__name__}: {v._short(error)})") from None
    v.bounded_int(count, "its parameter count", 1, v.LIMITS.params, where=what)
    if check is not None:
        check(shape_only)
    return build()


def load_weights(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The finite tensors of a safetensors file, refused in one line when the file is not one."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"{path} is missing; {what} is not a finished run")
    try:
        weights = load_file(str(path))
    except Exception as error:  # safetensors raises its own error type (and others) on a damaged file
        raise UserError(f"{path} is damaged: not a safetensors file ({type(error).__name__})") from None
    for name, tensor in weights.items():
        v.require_finite(tensor, f"{path} {name}")
    return weights


def load_checkpoint(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, device, steps: int) -> dict:
    """Load RUN/checkpoint.pt into `net` and `optimizer` (in memory only) and return what the file holds (its
    `step` checked, and what else the caller keeps in it: identity, RNG state), read once; a damaged or
    foreign checkpoint is one line, before the run folder is touched."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a cut file, a planted pickle, another format: torch, zip and pickle raise many kinds
        raise UserError(f"{path} is damaged ({type(error).__name__}); train again with --force") from None
    v.check_keys(state, {"net": dict, "optimizer": dict, "step": int}, path)
    v.bounded_int(state["step"], "step", 0, steps, where=path)
    _match_tensors(state["net"], net.state_dict(), path)
    params = list(net.parameters())
    moments = v.check_keys(state["optimizer"], {"state": dict, "param_groups": list}, f"{path} optimizer")["state"]
    for index, entry in moments.items():
        i = v.bounded_int(index, "optimizer state index", 0, len(params) - 1, where=path)
        v.check_keys(entry, {}, f"{path} optimizer state {i}")
        count = entry.get("step", 0)
        if not (isinstance(count, torch.Tensor) and count.numel() == 1 or isinstance(count, (int, float))):
            raise UserError(f"{path}: the optimizer's step count of tensor {i} is not a number")
        _match_tensors({k: t for k, t in entry.items() if k != "step"},
                       {k: params[i] for k in entry if k != "step"}, path)
    fresh = [{k: value for k, value in group.items() if k not in ("params", "lr")} for group in optimizer.param_groups]
    try:
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
        raise UserError(f"{path} does not fit this network ({type(error).__name__}); train again with --force") from None
    for group, options in zip(optimizer.param_groups, fresh):  # options come from this run's config, not the file
        group.update(options)
    return state


def _match_tensors(stored: Any, expected: dict[str, torch.Tensor], path: Path) -> None:
    """`stored` holds finite tensors of exactly the names and shapes of `expected`."""
    if not isinstance(stored, dict) or set(stored) != set(expected):
        names = sorted(map(str, stored))[:4] if isinstance(stored, dict) else type(stored).__name__
        raise UserError(f"{path} holds another network's tensors ({names}, expected {sorted(expected)[:4]})")
    for name, tensor in stored.items():
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(expected[name].shape):
            shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise UserError(f"{path}: {name} is {shape}, this network's is {list(expected[name].shape)}")
        v.require_finite(tensor, f"{path} {name}")
