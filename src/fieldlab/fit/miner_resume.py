"""MINER's checkpoint: where the pyramid is, in `fit.checkpoint`'s format (atomic, identity, log so far).

A checkpoint is taken at the start of every scale after the first and, within a scale, at a retirement
check once `CHECKPOINT_SECONDS` of fitting have passed since the last one. It holds

    scale, scale_step   the scale in progress and the steps it has done (0: not begun)
    levels              the finished scales' blocks (flat indices and parameters)
    trainer             the scale's `ScaleTrainer.state_dict()` (blocks still training, their Adam state,
                        the retired ones), or None at a scale's start
    retired, stats      the scale's retirement count and the fit's `PyramidStats` so far
    draws, rng          the sample-position generator, and torch's global generators as the scale began
                        (its blocks' initialisation draws from them)
    seconds             time since the fit began

The scale in progress is rebuilt by its residual pass (a function of the finished scales) and initialised
from the same generators, then given the trainer's state, so a resumed fit ends bit for bit as the
uninterrupted one (on the CPU; on CUDA as far as its kernels are deterministic).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fieldlab.fit import checkpoint as checkpoints

if TYPE_CHECKING:
    from fieldlab.fields.miner import Miner
    from fieldlab.fit.loop import RunLog
    from fieldlab.fit.miner import PyramidStats, ScaleTrainer

logger = logging.getLogger("fieldlab")


@dataclasses.dataclass
class PyramidCheckpoints:
    """Saves and restores one MINER fit's state in `path` (None: the fit keeps no checkpoint)."""

    path: Path | None
    identity: str
    state: dict | None = None
    """The checkpoint resumed from, until its scale is rebuilt."""
    saved: float = dataclasses.field(default_factory=time.perf_counter)

    @classmethod
    def open(cls, path: Path | None, identity: str, resume: bool) -> PyramidCheckpoints:
        """A fit's checkpoints in `path`; with `resume`, the one there (which must be this run's) to go on from."""
        return cls(path, identity, checkpoints.read_checkpoint(path, identity) if resume else None)

    @property
    def resumed_scale(self) -> int:
        """The scale a resumed fit goes on from (0 for a new fit)."""
        return self.state["scale"] if self.state is not None else 0

    def restore_levels(self, model: Miner, log: RunLog, stats: PyramidStats, draws: torch.Generator) -> float:
        """A resumed fit's finished scales, statistics, generator and log; returns the seconds it had run."""
        if self.state is None:
            return 0.0
        state, device = self.state, model.levels[0].index.device
        for level, saved in zip(model.levels, state["levels"]):
            level.assign(saved["index"].to(device), {k: v.to(device) for k, v in saved["params"].items()})
        for name, value in state["stats"].items():
            setattr(stats, name, value)
        draws.set_state(state["draws"])
        checkpoints.restore_log(log, state)
        logger.info("resuming at scale %d, step %s of it (%s)", state["scale"] + 1, f"{state['scale_step']:,}",
                    self.path)
        return state["seconds"]

    def scale_rng(self, s: int, device: torch.device) -> dict[str, torch.Tensor]:
        """torch's generators as scale `s` begins: a resumed fit's saved ones at its scale, else as they are."""
        if self.state is not None and s == self.state["scale"]:
            checkpoints.set_rng_state(self.state["rng"], device)
        return checkpoints.rng_state(device)

    def restore_scale(self, s: int, trainer: ScaleTrainer) -> tuple[int, int]:
        """(steps done, blocks retired) of scale `s`: a resumed fit's at its scale (the trainer then takes its
        saved state), else (0, 0)."""
        if self.state is None or s != self.state["scale"]:
            return 0, 0
        state, self.state = self.state, None
        if state["trainer"] is not None:
            trainer.load_state_dict(state["trainer"])
        return state["scale_step"], state["retired"]

    def due(self) -> bool:
        """Whether `CHECKPOINT_SECONDS` have passed since the last checkpoint (or the fit's start)."""
        from fieldlab.fit import loop

        return self.path is not None and time.perf_counter() - self.saved >= loop.CHECKPOINT_SECONDS

    def save(self, log: RunLog, *, model: Miner, scale: int, scale_step: int, trainer: ScaleTrainer | None,
             retired: int, stats: PyramidStats, draws: torch.Generator, rng: dict, seconds: float) -> float:
        """Saves the fit's state; returns the seconds it took (which the caller keeps out of its time)."""
        if self.path is None:
            return 0.0
        tick = time.perf_counter()
        levels = [{"index": level.index.cpu(), "params": {k: v.detach().cpu() for k, v in level.tensors().items()}}
                  for level in model.levels[:scale]]
        checkpoints.save({"scale": scale, "scale_step": scale_step, "levels": levels,
                          "trainer": None if trainer is None else trainer.state_dict(), "retired": retired,
                          "stats": dataclasses.asdict(stats), "draws": draws.get_state(), "rng": rng,
                          "seconds": seconds}, log, self.path, self.identity)
        self.saved = time.perf_counter()
        return self.saved - tick


__all__ = ["PyramidCheckpoints"]
