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
    max_seconds: float = 0.0
    """Time limit for the whole command, in seconds (0: none): the cells at the training resolution are
    scored first, and those the limit leaves are marked "time limit" in the table (a randomized set may be
    averaged over fewer draws, as its draws column says)."""
