"""Defaults chosen for the device a command runs on, so that the README's examples end in minutes on a CPU.

A GPU keeps the defaults the benchmarks were run with (every sample per step, no time limit). On a CPU an
option left unset (None) is resolved here, once, for every command that fits or trains:

- a time budget (`CPU_MAX_SECONDS`), stated in the log with the flag that lifts it;
- mini-batches of points instead of the full batch when a full step of the field over the whole signal
  would cost more than `CPU_STEP_BUDGET` (points × parameters), so a large photo takes many cheap steps in
  that budget rather than a handful of full ones; a mesh's occupancy fit takes that mini-batch too (at least
  16,384 points) where it is smaller than a GPU's 65,536 (`occupancy_points_per_step`).

An option given explicitly, `--max-seconds 0` and `--batch-size 0` included, is kept as given.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import torch

log = logging.getLogger("fieldlab")

CPU_MAX_SECONDS = 120.0
"""Seconds of fitting or training on a CPU when --max-seconds is not given: about two minutes, so that a
README command (reading, fitting, evaluating, writing) ends within three on a loaded 2-core machine."""

CPU_STEP_BUDGET = 2**30
"""Points × parameters of one CPU step at most (about 6 GFLOP forward and backward for an MLP): camera at
128² with a 16k-parameter SIREN (2.7e8) keeps its full batch, a 512² photo with a 200k-parameter field
takes 4,096 points per step instead of 262,144 (27 s per full step on 2 loaded cores)."""

CPU_MIN_POINTS = 4096
"""Fewest points per CPU mini-batch: below it a step's gradient is too noisy to be worth its overhead."""


@dataclasses.dataclass(frozen=True)
class DeviceDefaults:
    """What an unset option becomes on one device."""

    max_seconds: float
    """Time budget of a fit or a training run; 0: none."""
    step_budget: int
    """Points × parameters of one fitting step at most; 0: every sample (the full batch)."""

    def points_per_step(self, points: int, params: int) -> int:
        """Points of one step of a field of `params` parameters over `points` samples; 0: every sample."""
        if not self.step_budget or points * params <= self.step_budget:
            return 0
        fitting = max(CPU_MIN_POINTS, self.step_budget // max(params, 1))
        size = 1 << (fitting.bit_length() - 1)  # a power of two, for steady kernels and a readable log
        return 0 if size >= points else size


def dataset_sample_fraction(device: torch.device | str, points: int, fields: int, params: int, *,
                            say: bool = False) -> float:
    """`fit-dataset`'s unset --sample-fraction: the share of each item's `points` samples that one step of a batch
    of `fields` fields of `params` parameters takes so that the step stays within the device's budget (a CPU's
    `CPU_STEP_BUDGET`, as `points_per_step` for one field of fields × params), 0 (every sample) where it does
    already or on a GPU. 16 photos of 512² with SIREN 2×32 took 6.3 s a full step on 2 cores, 55 min for 500.
    With `say`, a subset is logged with the flag that undoes it."""
    size = device_defaults(device).points_per_step(points, fields * params)
    if size and say:
        log.info("%s: %s of %s samples per field and step (a step of %s fields within the CPU's budget); "
                 "--sample-fraction 0 for every sample", _name(device), f"{size:,}", f"{points:,}", f"{fields:,}")
    return size / points if size else 0.0


OCCUPANCY_POINTS = 2**16
"""Points per step of a mesh's occupancy fit on a GPU (and at most on a CPU)."""

OCCUPANCY_CPU_MIN_POINTS = 2**14
"""Fewest points per CPU step of a mesh's occupancy fit: on the README's bunny at equal points processed,
16,384-point steps reached IoU 0.93 against 0.95 for 4,096 and 0.70 for 65,536, at half the time per point of
4,096 (BENCHMARKS.md, occupancy stopping rule and CPU mesh fits)."""


def occupancy_points_per_step(device: torch.device | str, points: int, params: int) -> int:
    """Points per step of a mesh's occupancy fit whose batch size is unset: `OCCUPANCY_POINTS` on a GPU; on
    a CPU the step budget's mini-batch where it is smaller, but no fewer than `OCCUPANCY_CPU_MIN_POINTS`
    (16,384 for the 199k-parameter default SIREN), so the time budget buys hundreds of steps, not a few dozen."""
    full = min(OCCUPANCY_POINTS, points)
    budget = device_defaults(device).points_per_step(points, params)
    return min(full, max(budget, OCCUPANCY_CPU_MIN_POINTS)) if budget else full


def device_defaults(device: torch.device | str) -> DeviceDefaults:
    """The defaults for `device` (a resolved device, or its name): today's on a GPU, bounded on a CPU."""
    if torch.device(device).type == "cuda":
        return DeviceDefaults(max_seconds=0.0, step_budget=0)
    return DeviceDefaults(max_seconds=CPU_MAX_SECONDS, step_budget=CPU_STEP_BUDGET)


def resolve_max_seconds(value: float | None, device: torch.device | str, flag: str = "--max-seconds", *,
                        say: bool = True) -> float:
    """`value` if given, else the device's time budget, which the log states once with how to lift it
    (`say=False`: the caller says it with `say_time_limit` once its input is checked)."""
    if value is not None:
        return value
    seconds = device_defaults(device).max_seconds
    if say:
        say_time_limit(seconds, device, flag)
    return seconds


@dataclasses.dataclass(frozen=True)
class TimeLimit:
    """A command's `--max-seconds` as resolved for its device, in one place for every command: `seconds` go
    into its config and its written config.json (the budget actually used, not null), and `say()` states a
    budget the device chose, to be called once the input is checked (a user error stays one line); under
    --quiet it says nothing (the line that says the limit stopped the run says it then)."""

    seconds: float
    device: str
    chosen: bool
    """Whether the device chose `seconds` (the option was left unset)."""
    quiet: bool = False
    flag: str = "--max-seconds"

    def say(self) -> None:
        if self.chosen and not self.quiet:
            say_time_limit(self.seconds, self.device, self.flag)


def time_limit(value: float | None, device: torch.device | str, *, quiet: bool = False,
               flag: str = "--max-seconds") -> TimeLimit:
    """`value` if given, else the device's time budget, with the note that states it (`TimeLimit.say`)."""
    return TimeLimit(resolve_max_seconds(value, device, flag, say=False), str(device), value is None, quiet, flag)


def say_time_limit(seconds: float, device: torch.device | str, flag: str = "--max-seconds") -> None:
    if seconds:
        log.info("%s: stopping after %g s; %s 0 for no limit", _name(device), seconds, flag)


CPU_PRECISION_NOTES = {
    "fp16": "its products run in software, several times slower than fp32 (one SIREN took 102 s against 23 s); "
            "it is meant for GPUs",
    "tf32": "the CPU has no TF32, so the steps run in fp32",
}
"""What a precision meant for GPUs does on the CPU, said once when a fit starts there (`say_precision`)."""


def say_precision(precision: str, device: torch.device | str) -> None:
    """The note of `CPU_PRECISION_NOTES` for `precision` where `device` is the CPU (one line in the log)."""
    if torch.device(device).type == "cpu" and precision in CPU_PRECISION_NOTES:
        log.info("--precision %s on the CPU: %s", precision, CPU_PRECISION_NOTES[precision])


def resolve_fit_config(config: Any, device: torch.device | str, *, points: int | None = None,
                       params: int | None = None, say: bool = True) -> Any:
    """`config` (a `FitConfig`) with its unset `max_seconds` and, given the signal's `points` and the
    field's `params`, its unset `batch_size` resolved for `device`. An unset batch size stays None where
    the points are not known (a field's own trainer chooses its batches)."""
    changes: dict[str, Any] = {}
    if say:
        say_precision(getattr(config, "precision", "fp32"), device)
    if config.max_seconds is None:
        changes["max_seconds"] = resolve_max_seconds(None, device, say=say)
    if config.batch_size is None and points is not None and params is not None:
        changes["batch_size"] = resolve_batch(config, device, points, params, say=say).batch_size
    return dataclasses.replace(config, **changes) if changes else config


MEMORY_SHARE = 0.8
"""Of a GPU's free memory, what a fit whose batch the device chooses plans to use (`resolve_batch`; a field's
`fit_bytes` is an estimate)."""


def resolve_batch(config: Any, device: torch.device | str, points: int, params: int, *,
                  fit_bytes: Callable[[int], int] | None = None, say: bool = True) -> Any:
    """`config` (a `FitConfig`) with its unset `batch_size` (None, without a `sample_fraction`) resolved for a
    field of `params` parameters on `points` samples: on a CPU the step budget's mini-batch
    (`DeviceDefaults.points_per_step`); on CUDA every point (0), or where `fit_bytes(points)` would not fit
    `MEMORY_SHARE` of the free memory, the largest power of two that does (down to `CPU_MIN_POINTS`; the
    command's memory check refuses what is left). A 10-s 512² video (157 M samples) was refused on an H100 at
    its defaults: every point per step needed about 1,800 GB. With `say`, a chosen mini-batch is logged."""
    if config.batch_size is not None:
        return config
    size = 0 if config.sample_fraction else device_defaults(device).points_per_step(points, params)
    why = "; --batch-size 0 for every point"
    if not size and not config.sample_fraction and fit_bytes is not None and torch.device(device).type == "cuda":
        free = torch.cuda.mem_get_info(torch.device(device))[0] * MEMORY_SHARE
        if fit_bytes(points) > free:
            size = 1 << (points.bit_length() - 1)
            while size > CPU_MIN_POINTS and fit_bytes(size) > free:
                size //= 2
            why = (f", as many as its free memory fits (every point would need about {fit_bytes(points) / 2**30:.0f} "
                   "GB); --batch-size chooses")
    if size and say:
        log.info("%s: %s of %s points per step%s", _name(device), f"{size:,}", f"{points:,}", why)
    return dataclasses.replace(config, batch_size=size)


def _name(device: torch.device | str) -> str:
    return torch.device(device).type.upper()
