"""Render a stored field at any resolution over any sub-region of its domain, in chunks."""

from __future__ import annotations

import dataclasses
import logging
import math

import torch

from fieldlab._errors import UserError
from fieldlab._progress import in_pieces
from fieldlab._validate import check_memory
from fieldlab.signals import SignalInfo, get_modality, grid_coords
from fieldlab.store import StoredField

log = logging.getLogger("fieldlab")

MAX_RENDER_SAMPLES = 2**30
CHUNK = 2**18
"""Points per forward pass of a render."""
FORWARD_LIVE_TENSORS = 4
"""Chunk-sized tensors of the field's widest hidden width alive at once in a forward pass without autograd
(a layer's input and output, the activation's scaled copy and its result): a 256-wide SIREN's 2**18-point
chunk peaked at 0.95 GB on the CPU, 3.5 of them."""


def parse_region(text: str, in_dim: int) -> list[tuple[float, float]]:
    """`START:STOP` per axis, comma separated, in sample units (`0:128,0:96`); an empty side is open."""
    parts = text.split(",")
    if len(parts) != in_dim:
        raise UserError(f"--region needs {in_dim} START:STOP ranges separated by commas, got {text!r}")
    region = []
    for part in parts:
        try:
            lo, hi = part.split(":")
            region.append((float(lo), float(hi)))
        except ValueError:
            raise UserError(f"--region range {part!r} is not START:STOP") from None
    for lo, hi in region:
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise UserError(f"--region range {lo:g}:{hi:g} is empty or not finite")
    return region


def render_grid(stored: StoredField, *, size: list[int] | None = None, region: list[tuple[float, float]] | None = None,
                device: str | torch.device | None = None) -> tuple[list[int], list[tuple[float, float]]]:
    """Resolve the output size and region (by default the whole signal at its own resolution), refusing one
    whose render would not fit in memory (`_check_render_memory` on `device`, by default the field's)."""
    shape = stored.signal.shape
    region = region or [(0.0, float(n)) for n in shape]
    if len(region) != len(shape) or any(not lo < hi for lo, hi in region):
        raise UserError(f"a region needs one increasing START:STOP per axis ({len(shape)}), got {list(region)}")
    if isinstance(size, int):
        size = [size] * len(shape)
    if size is None:
        size = [max(1, round(hi - lo)) for lo, hi in region]
    if len(size) != len(shape):
        raise UserError(f"--size needs {len(shape)} numbers for a {stored.signal.kind}, got {len(size)}")
    if any(n <= 0 for n in size):
        raise UserError(f"--size must be positive, got {' '.join(map(str, size))}")
    if math.prod(size) > MAX_RENDER_SAMPLES:
        raise UserError(f"--size {' '.join(map(str, size))} is too large (at most {MAX_RENDER_SAMPLES} samples)")
    _check_render_memory(stored, size, device=device)
    return size, region


def _check_render_memory(stored: StoredField, size: list[int], *, device: str | torch.device | None = None) -> None:
    """One line, before anything is allocated, when rendering `size` samples of `stored` (and writing them)
    would need more memory than the machine has free: its modality's `render_bytes` per value of the output, and a
    `CHUNK`'s forward pass when it runs on the CPU (`device`, by default where the field's weights are)."""
    info = stored.signal
    per_value = get_modality(info.kind).render_bytes
    need = per_value * math.prod(size) * info.channels
    where = torch.device(device) if device is not None else next(stored.module.parameters()).device
    if where.type == "cpu":
        need += FORWARD_LIVE_TENSORS * 4 * min(CHUNK, math.prod(size)) * stored.config.widest()
    try:
        check_memory(need, f"rendering {'x'.join(map(str, size))} samples of {info.channels} channel(s) "
                           f"({per_value} bytes a value for {info.kind})")
    except UserError as error:
        raise UserError(f"{error}: ask for fewer samples (a smaller --size or --region)") from None


def _note_stretch(kind: str, size: list[int], region: list[tuple[float, float]]) -> None:
    """One note when the spatial axes get different samples per unit (the axis of a modality's rate, a video's
    or a sound's time, is its own), so the render is stretched; rounding within a sample is no stretch."""
    spatial = range(1 if get_modality(kind).rate else 0, len(size))
    if len(spatial) < 2:
        return
    scales = [size[i] / (region[i][1] - region[i][0]) for i in spatial]
    if max(scales) / min(scales) > 1 + 1 / min(size[i] for i in spatial):
        log.info("--size %s changes the aspect ratio of %s to %s: the render is stretched",
                 "x".join(str(size[i]) for i in spatial), ":".join(f"{region[i][1] - region[i][0]:g}" for i in spatial),
                 ":".join(str(size[i]) for i in spatial))


@torch.no_grad()
def render(stored: StoredField, *, size: list[int] | None = None, region: list[tuple[float, float]] | None = None,
           chunk: int = CHUNK, device: str | torch.device = "cpu", progress: bool = False) -> torch.Tensor:
    """Field values (*size, c) in the field range on a `size` grid of sample centres covering `region`
    (`progress`: a bar over the chunks, else a log line)."""
    size, region = render_grid(stored, size=size, region=region, device=device)
    _note_stretch(stored.signal.kind, size, region)
    shape = stored.signal.shape
    if any(lo < 0 or hi > n for (lo, hi), n in zip(region, shape)):
        log.warning("the region %s reaches past the signal (%s): the field is extrapolated there",
                    ",".join(f"{lo:g}:{hi:g}" for lo, hi in region), ",".join(f"0:{n}" for n in shape))
    module = stored.module.to(device)
    coords = grid_coords(stored.signal.domain, region, size)
    pieces = in_pieces(f"rendering {'x'.join(map(str, size))}", coords.shape[0], chunk, unit="sample", bar=progress)
    parts = [module(coords[i:stop].to(device)).float().cpu() for i, stop in pieces]
    return torch.cat(parts).reshape(*size, -1)


def rendered_info(info: SignalInfo, size: list[int], region: list[tuple[float, float]]) -> SignalInfo:
    """The signal info of a render: rates scale with the samples per unit (a 2× audio render plays at 2×
    the sample rate, so it lasts as long; a video's frame rate scales with frames per source frame)."""
    key, axis = get_modality(info.kind).rate, 0  # a rate is along the first axis, time
    if key is None or key not in info.extra:
        return info
    lo, hi = region[axis]
    factor = size[axis] / (hi - lo)
    rate = info.extra[key] * factor
    if key == "sample_rate" and round(rate) < 1:
        raise UserError(f"{size[axis]} samples over {(hi - lo) / info.extra[key]:.3g} seconds would play at under "
                        "1 Hz; ask for more samples (--size)")
    return dataclasses.replace(info, extra={**info.extra, key: round(rate) if key == "sample_rate" else rate})


def frame_info(info: SignalInfo, size: list[int]) -> SignalInfo:
    """The signal info of one rendered frame of a video (`size` one frame long) as an image: its height and
    width, their part of the domain, no frame rate."""
    return dataclasses.replace(info, kind="image", shape=tuple(size[1:]), domain=tuple(info.domain[1:]),
                               extra={k: v for k, v in info.extra.items() if k != get_modality(info.kind).rate})
