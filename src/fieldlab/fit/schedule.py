"""Learning-rate schedules: a warm-up, then a constant, exponential or cosine decay, as a function of the step.

Every training path takes its learning rates from here (`fit`, `fit-dataset`, meta-learning's outer loop,
MINER's scales, `extend`, mesh fitting, `train`, `train-sdf`), through torch's `LambdaLR` with `factor` or
by setting `lr(step)` itself.

    exponential  factor = warm(step) · final^(step / steps)    decays from step 0; the warm-up ramps on top
    cosine       factor = (step + 1) / warmup during the warm-up, then final + (1 − final) · ½(1 + cos πp),
                 p = (step − warmup) / (steps − warmup) rising from 0 to 1 after it
    constant     factor = (step + 1) / warmup during the warm-up, then 1

The arithmetic is each path's historical one, operation for operation, so a schedule gives the same
floats (and a fit the same weights) as before the paths shared it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Learning rate `peak` · `factor(step)` at 0-based `step` of `steps`.

    >>> Schedule(1e-3, steps=100, decay="cosine", final=0.1, warmup=10).lr(9)   # the warm-up's last step
    0.001
    """

    peak: float
    steps: int
    decay: Literal["constant", "exponential", "cosine"] = "exponential"
    final: float = 1.0
    """The factor at the end of the decay (exponential: at `steps`; cosine: from `steps` on)."""
    warmup: int = 0
    """Steps of linear warm-up from peak / warmup to peak; 0 for none."""
    angle_first: bool = False
    """Cosine: form the angle as π · (step − warmup) / span rather than π · ((step − warmup) / span), MINER's
    rounding (the two differ in the last bit at about a quarter of the steps)."""

    def __post_init__(self):
        if self.decay not in ("constant", "exponential", "cosine"):
            raise ValueError(f"a schedule decays constant, exponential or cosine, not {self.decay!r}")

    def factor(self, step: int) -> float:
        """The learning rate of `step` as a fraction of `peak` (what torch's `LambdaLR` multiplies by)."""
        if self.decay == "exponential":
            warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
            return warm * math.exp(math.log(self.final) / self.steps * step)
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.decay == "constant":
            return 1.0
        done, span = step - self.warmup, max(1, self.steps - self.warmup)
        angle = math.pi * min(done, span) / span if self.angle_first else math.pi * min(1.0, done / span)
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(angle))

    def lr(self, step: int) -> float:
        """The learning rate of `step`: `peak · factor(step)`, except that a warm-up before a cosine or a
        constant rounds as peak · (step + 1) / warmup (the learn loops' arithmetic, which can differ from
        `peak · factor` in the last bit; `LambdaLR` users get `factor`'s)."""
        if self.decay != "exponential" and self.warmup and step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        return self.peak * self.factor(step)

    def lrs(self, first: int = 0, end: int | None = None) -> list[float]:
        """The learning rates of steps first … end − 1 (default: every step)."""
        return [self.lr(step) for step in range(first, self.steps if end is None else end)]
