"""One checkpoint format for every fit that keeps one: the standard loop's `Fitter`, extend's, a mesh's
`OccupancyFitter` and MINER's pyramid.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (read with `weights_only=True`: no
pickle runs), written whole or not at all (`store.field_dir.save_checkpoint`: beside the file, then renamed
over it), so a SIGKILL at any moment leaves the previous checkpoint or the new one. Every checkpoint holds

    identity   the run's options and input (a resume with other options is refused)
    log        log.jsonl so far (a resumed log has each line once)
    seconds    fitting time so far

and its engine's state (`Fitter.state_dict`, or MINER's scale, blocks, Adam and RNG).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fieldlab._errors import UserError
from fieldlab.store.field_dir import save_checkpoint

if TYPE_CHECKING:
    from fieldlab.fit.loop import Fitter, RunLog

logger = logging.getLogger("fieldlab")


def save(state: dict[str, Any], log: RunLog | None, path: Path, identity: str) -> None:
    """`state` with the run's `identity` and its log so far (none without `log`), atomically in `path`."""
    text = log.log_path.read_text() if log and log.log_path and log.log_path.exists() else ""
    save_checkpoint({"identity": identity, **state, "log": text}, path)


def read_checkpoint(path: Path, identity: str) -> dict:
    """The checkpoint `path` (weights_only: no pickle runs), which must be this run's (`identity`)."""
    if not path.is_file():
        raise UserError(f"--resume: no checkpoint of an interrupted fit at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file: say so rather than guess
        raise UserError(f"--resume: {path} is not a readable checkpoint ({type(error).__name__})") from None
    if state.get("identity") != identity:
        raise UserError(f"--resume: {path} was saved by a fit with other options or input; run without --resume "
                        "to start again")
    return state


def restore_log(log: RunLog, state: dict) -> None:
    """The checkpoint's log lines, written again to the (new) log file."""
    if log.file:
        log.file.write(state["log"])
        log.file.flush()


def save_fitter(fitter: Fitter, log: RunLog, path: Path, identity: str) -> None:
    """The Fitter's state so far (step, field, Adam, schedule, sampling generator, time), in `path`."""
    engine = fitter.state_dict()
    save({"step": engine.pop("step"), "seconds": fitter.seconds, "last_psnr": fitter.last_psnr, **engine}, log, path,
         identity)


def restore_fitter(fitter: Fitter, log: RunLog, state: dict, path: Path) -> None:
    """Continue from a checkpoint's `state`: parameters, Adam, schedule, generator, time and log."""
    fitter.load_state_dict(state)
    fitter.seconds, fitter.last_psnr = state["seconds"], state["last_psnr"]
    restore_log(log, state)
    logger.info("resuming from step %s of %s (%s)", f"{fitter.step_count:,}", f"{fitter.config.steps:,}", path)


@dataclasses.dataclass
class FitterCheckpoints:
    """Where and when a `Fitter`'s fit keeps its checkpoint (`path` None: it keeps none), and the state it
    resumes from: saved after a log line (so a resumed log has it once) every `CHECKPOINT_SECONDS` of
    fitting, unless the fit stops then anyway."""

    path: Path | None
    identity: str
    state: dict | None = None
    saved: float = 0.0
    """Fitting seconds at the last checkpoint."""

    def restore(self, fitter: Fitter, log: RunLog) -> None:
        if self.state is not None:
            restore_fitter(fitter, log, self.state, self.path)
        self.saved = fitter.seconds

    def maybe_save(self, fitter: Fitter, log: RunLog) -> None:
        from fieldlab.fit import loop  # which imports this module

        if self.path is None or fitter.seconds - self.saved < loop.CHECKPOINT_SECONDS or fitter.should_stop():
            return
        with fitter.paused():
            save_fitter(fitter, log, self.path, self.identity)
        self.saved = fitter.seconds


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """torch's global generators (the CPU's, and `device`'s on CUDA), which some engines draw from."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


__all__ = ["FitterCheckpoints", "read_checkpoint", "restore_fitter", "restore_log", "rng_state", "save", "save_fitter", "set_rng_state"]
