"""The one training loop of `train` and `train-sdf`: a `Task` (`fieldlab.learn.task`) and a network in, the
trained network out.

    train_loop(task, net, options, device=..., run=RUN, resume=...)
      resume     RUN/checkpoint.pt -> network, AdamW, step, RNG (refused when saved by a run of other options)
      begin()    the caller writes what RUN holds before training (config.json), after the checkpoint is read
                 (and RUN made, with `log_file`)
      each step  task.loss(model, step) under the precision's autocast; AdamW at the schedule's rate
                 (linear warm-up, cosine decay: fit/schedule.py)
      progress   a line every `print_every` steps; RunLog: log.jsonl, TensorBoard, a bar with ETA and the loss
      deadline   stops when the next step, the task's scoring and writing would pass the active time limit
      checkpoint every `checkpoint_steps` steps (0: every `fit.loop.CHECKPOINT_SECONDS`), at a stop, at the end

Under `torchrun` the network is wrapped in DistributedDataParallel; the task takes its rank's part of each
step's batch, so N ranks compute what one process computes. Only rank 0 prints, logs and saves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from fieldlab import _deadline, distributed
from fieldlab._optim import Adam
from fieldlab._errors import UserError
from fieldlab._memory import keep_freed_blocks
from fieldlab.fit.schedule import Schedule
from fieldlab.learn import graphed
from fieldlab.learn.task import Task


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """How the loop trains (the optimizer, schedule, precision) and how often it reports and saves."""

    steps: int
    lr: float
    """Peak AdamW learning rate (warm-up, then cosine to 0 at `steps`)."""
    weight_decay: float
    warmup: int
    precision: str = "fp32"
    print_every: int = 100
    """Steps between progress lines."""
    record_every: int = 10
    """Steps between RunLog records (log.jsonl, TensorBoard, the bar's loss)."""
    checkpoint_steps: int = 0
    """Steps between checkpoints; 0: every `fit.loop.CHECKPOINT_SECONDS` of training."""
    loss_format: str = ".4f"
    identity: str | None = None
    """What a checkpoint must have been saved by to be resumed (None: not checked)."""

    @classmethod
    def of(cls, config, **options) -> LoopOptions:
        """The options of a command's config (its steps, lr, weight_decay, warmup, precision)."""
        common = {name: getattr(config, name) for name in ("steps", "lr", "weight_decay", "warmup", "precision")}
        return cls(**common, **options)

    def schedule(self) -> Schedule:
        return Schedule(self.lr, self.steps, "cosine", final=0.0, warmup=self.warmup)


@dataclasses.dataclass(frozen=True)
class Trained:
    steps: int
    """The steps taken, with those of a resumed checkpoint."""
    seconds: float
    """Training time of this process (from the loop's start)."""


def train_loop(task: Task, net: nn.Module, options: LoopOptions, *, device: torch.device, run: Path | None = None,
               resume: bool = False, progress: Callable[[str], None] = print, log_file: bool = False,
               tensorboard: bool = False, bar: bool = False, stop_at: int | None = None,
               begin: Callable[[], None] | None = None,
               save: Callable[..., None] | None = None) -> Trained:
    """Train `net` (on `device`) on `task` for `options.steps` AdamW steps or until the active time limit
    (`fieldlab._deadline`); checkpoints in `run` (none without it). `resume` continues from RUN/checkpoint.pt.
    `log_file`: RUN/log.jsonl (what `fieldlab view RUN` draws); `tensorboard`: RUN/tensorboard; `bar`: a
    progress bar on stderr. `stop_at` ends after that step with a checkpoint, as an interruption would.
    `begin` runs once the checkpoint is read (and, with `log_file`, RUN made), before anything else is written; `save(run, net, optimizer,
    step, identity)` replaces `save_state`."""
    from fieldlab.fit import loop as fit_loop
    from fieldlab.fit.loop import RunLog, autocast_for, matmul_precision

    save = save or save_state
    main = distributed.rank() == 0
    model, graphs = net, False
    if distributed.world_size() > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    elif device.type == "cuda" and graphed.GRAPHS:  # steps replayed from CUDA graphs where the net allows
        model, graphs = graphed.GraphedTraining(net, say=progress), True
    if device.type == "cpu":  # every step allocates the same activations: keep the freed ones (`_memory`)
        keep_freed_blocks()
    optimizer = Adam(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)  # AdamW's decay
    start = 0
    if resume and run is not None and (run / "checkpoint.pt").is_file():  # read before RUN is written
        start = load_state(run / "checkpoint.pt", net, optimizer, device, options.steps, options.identity)
        if main:
            progress(f"resuming from step {start}/{options.steps}")
    if log_file and main and run is not None:
        _made(run)
    if begin is not None:
        begin()
    log = RunLog(run / "log.jsonl" if log_file and main and run else None,
                 run / "tensorboard" if tensorboard and main and run else None, bar and main, options.steps)
    schedule, deadline = options.schedule(), _deadline.active()
    end = options.steps if stop_at is None else min(stop_at, options.steps)
    began, saved = time.time(), time.perf_counter()
    with contextlib.closing(log), matmul_precision(options.precision):  # tf32 matmuls, as fit's steps
        for step in range(start, end):
            tick = time.perf_counter()
            model.train()
            with autocast_for(options.precision, device, cache=not graphs):  # the forward pass and loss, as fit's
                loss = task.loss(model, step)
            for group in optimizer.param_groups:
                group["lr"] = schedule.lr(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done = step + 1
            if main and (done % options.print_every == 0 or done == options.steps):
                progress(f"step {done}/{options.steps}  loss {loss.item():{options.loss_format}}  "
                         f"{time.time() - began:.0f}s")
            if main and (done % options.record_every == 0 or done == options.steps):
                log.record(done, schedule.lr(step), time.time() - began, loss=loss.item())
            # The step's autograd graph goes now, not when the next step's loss replaces it: alive, it keeps its
            # parameters' gradient accumulators (tied to the stream they ran on), which a CUDA graph captured in
            # the next step would then depend on, and fail (`learn.graphed`)
            del loss
            if main:
                log.advance(done)
            last = time.perf_counter() - tick
            # At least one step is taken; the next, the task's scoring and writing must fit (every rank stops together).
            if deadline.bounded and done < end and not distributed.all_ok(
                    not deadline.out_of_time(last + deadline.reserve(after=task.scoring_seconds(last)))):
                deadline.cut(f"training stopped after step {done:,} of {options.steps:,}")
                if main:
                    progress(f"stopped by --max-seconds after step {done}/{options.steps}")
                end = done
            # Between steps (every draw is keyed by the step), so a resumed run takes the same ones.
            due = (done % options.checkpoint_steps == 0 if options.checkpoint_steps else
                   time.perf_counter() - saved >= fit_loop.CHECKPOINT_SECONDS)
            if main and run is not None and (due or done == end):
                save(run, net, optimizer, done, options.identity)
                saved = time.perf_counter()
            if done == end:
                break
    return Trained(steps=max(start, end), seconds=round(time.time() - began, 2))


def save_state(run: Path, net: nn.Module, optimizer: torch.optim.Optimizer, step: int, identity: str | None) -> None:
    """RUN/checkpoint.pt, whole or not at all: the network, AdamW, the step, the run's identity and RNG state
    (tensors and plain values only, read back with weights_only=True)."""
    from fieldlab.store.field_dir import save_checkpoint

    _made(run)
    state = {"net": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "rng": torch.get_rng_state()}
    if identity is not None:
        state["identity"] = identity
    save_checkpoint(state, run / "checkpoint.pt")


def _made(run: Path) -> None:
    from fieldlab._safety import write_marker

    run.mkdir(parents=True, exist_ok=True)
    write_marker(run, "run")  # a RUN that --resume (or --force) may reopen


def run_identity(options: dict, changeable: tuple[str, ...] = ("device", "max_seconds")) -> str:
    """A run's identity for `LoopOptions.identity`: its options as JSON, less those a resumed run may change."""
    from fieldlab import _json

    return _json.dumps({k: v for k, v in options.items() if k not in changeable}, sort_keys=True, default=str)


def _differing(recorded: str, identity: str) -> str:
    """' (steps, store)': the options in which two identities (`run_identity`'s JSON) differ, or '' when either
    is not such a JSON object."""
    import json

    try:
        before, now = json.loads(recorded), json.loads(identity)
    except ValueError:
        return ""
    if not isinstance(before, dict) or not isinstance(now, dict):
        return ""
    keys = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    return f" ({', '.join(keys)})" if keys else ""


def load_state(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, device, steps: int,
               identity: str | None) -> int:
    """The step of the checkpoint at `path`, loaded into `net` and `optimizer` (checked by
    `_run_files.load_checkpoint`, which reads the file once) with its RNG state; refused when `identity` is
    given and it was saved by a run of another."""
    from fieldlab.learn._run_files import load_checkpoint

    state = load_checkpoint(path, net, optimizer, device, steps)
    recorded = state.get("identity")  # None in a checkpoint saved before its command recorded one: taken as it is
    if identity is not None and recorded is not None and recorded != identity:
        raise UserError(f"--resume: {path} was saved by a run with other options{_differing(recorded, identity)}; run "
                        "without --resume to start again")
    rng = state.get("rng")
    if isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8:
        torch.set_rng_state(rng.cpu())  # read onto `device`; the CPU generator takes a CPU tensor
    return state["step"]


__all__ = ["LoopOptions", "Trained", "load_state", "run_identity", "save_state", "train_loop"]
