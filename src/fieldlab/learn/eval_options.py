"""The options of `fieldlab eval` (the CLI's flags are generated from them)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Which point sets and resolutions a trained run is scored on."""

    points: str = "grid,qmc,rqmc,random,shrunk"
    """Test point sets, comma-separated."""
    resolutions: str | None = None
    """Grid sides, comma-separated (each set gets side^d points); default: the training resolution."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    draws: int = 5
    """Draws of each randomized point set (rqmc, random, shrunk) whose scores are averaged."""
