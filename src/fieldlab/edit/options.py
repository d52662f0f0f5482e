"""The options of `fieldlab render` and `fieldlab crop` (the CLI's flags are generated from them)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """How to render a field DIR."""

    size: str | None = None
    """Samples per axis, e.g. --size 512 512 (a mesh: one number, the grid)."""
    region: str | None = None
    """START:STOP per axis in sample units (frames, samples, pixels), e.g. 0:128,0:96."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""


@dataclasses.dataclass(frozen=True)
class CropConfig:
    """What to keep of a partitioned field."""

    keep: str | None = None
    """Box to keep, START:STOP per axis in samples, e.g. 0:128,0:96."""
    remove: str | None = None
    """Partition indices to delete, e.g. 0,5,6: their weights go, but the field keeps its extent. A Local-Global
    partition renders 0 there (a mid-grey hole in an image). MINER's are the blocks of its pyramid, numbered scale
    by scale from the coarsest (`fieldlab info` counts them): each sample sums one block per scale, so a removed
    block leaves the other scales there, and a coarse one changes every sample under it; for a smaller field
    give --keep with the box that remains."""
    reconstruction: bool = True
    """Also render the cropped field into DIR2."""
