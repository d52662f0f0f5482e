"""The options of `fieldlab view` (the CLI's flags are generated from them)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ViewConfig:
    """Where to serve the view of a field DIR, a field store or a training run."""

    host: str = "127.0.0.1"
    """Address to listen on; the loopback default keeps the page on this machine."""
    port: int | None = None
    """Port to listen on (default: the first free one from 7860)."""
    device: str = "auto"
    """Where fields are rendered: auto, cpu, cuda or cuda:N."""
