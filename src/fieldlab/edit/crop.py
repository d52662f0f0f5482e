"""Cropping a stored field: keep a box of its signal (or drop partitions) and delete the rest's weights.

The protocol (any field config may implement it; Local-Global and MINER do)::

    config.cropped(state, box) -> (config2, state2)
        `state` is the module's state dict; `box` is a per-axis tuple of integer (lo, hi) sample ranges
        in the field's *frame*: the sample grid the config was adapted to (`adapt(shape)`), whose sample
        i sits at canonical coordinate 2 (i + 0.5) / shape - 1, so the frame spans [-1, 1] and a box may
        reach past it only for fields that have grown there (`extend`). The result is the smallest field
        whose render equals this one's at every point inside `box` (the same weights, so the same values up
        to the float rounding of differently tiled batches, within 1e-7): weights that no point
        of the box reads are deleted (not zeroed), so the parameter count falls with the kept share.
        Canonical coordinates do not move: `config2.build().load_state_dict(state2)` evaluated at the
        same coordinates gives the same values inside the box.

    config.without_parts(state, parts) -> (config2, state2)          (optional; partitioned fields)
        Delete the weights of the partitions (or blocks) with these indices, in the order
        `config.part_boxes()` lists them; a deleted part's share of the render is 0 (a Local-Global point
        in a deleted partition renders 0; a MINER point keeps its other scales' blocks: `removal_summary`).

    config.part_boxes() -> list of boxes                              (optional; with `without_parts`)
        Every part's box in frame units, so users can name the parts they remove (MINER's take the state).

    config.part_scales(state) -> list of ints                         (optional; parts that overlap)
        Each part's scale, where parts of several scales overlap and every sample sums one of each (MINER).

`crop_field` turns a user's box in the signal's own sample units into frame units (the signal's domain
lo is the frame origin), calls the protocol, and re-bases the signal so the cropped field's sample 0 is
the box's first sample: its default render is exactly the kept box. The field's canonical coordinates
stay put, so the new `SignalInfo.domain` is the old one shifted by the box's start.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import torch

from fieldlab._errors import UserError
from fieldlab.fields import Croppable, FieldConfig, Partitioned
from fieldlab.signals import SignalInfo
from fieldlab.store import StoredField

Box = tuple[tuple[int, int], ...]


def parse_box(text: str, shape: Sequence[int]) -> Box:
    """`START:STOP` per axis, comma separated, whole samples (`0:128,0:96`); an empty side is the edge."""
    parts = text.split(",")
    if len(parts) != len(shape):
        raise UserError(f"--keep needs {len(shape)} START:STOP ranges separated by commas, got {text!r}")
    box = []
    for part, n in zip(parts, shape):
        try:
            lo_text, hi_text = part.split(":")
            lo, hi = int(lo_text) if lo_text.strip() else 0, int(hi_text) if hi_text.strip() else n
        except ValueError:
            raise UserError(f"--keep range {part!r} is not START:STOP in whole samples") from None
        if not 0 <= lo < hi <= n:
            raise UserError(f"--keep range {lo}:{hi} is empty or leaves the signal's 0:{n}")
        box.append((lo, hi))
    return tuple(box)


def parse_parts(text: str) -> list[int]:
    """Comma-separated partition indices (`0,3,7`)."""
    try:
        parts = [int(v) for v in text.replace(" ", ",").split(",") if v]
    except ValueError:
        raise UserError(f"--remove needs partition indices separated by commas, got {text!r}") from None
    if not parts:
        raise UserError("--remove needs at least one partition index")
    return parts


def _frame_origin(info: SignalInfo) -> tuple[int, ...]:
    """Where the signal's sample 0 lies in the field's frame (the domain's lo, negated)."""
    origin = []
    for lo, _ in info.domain:
        if lo != int(lo):
            raise UserError("this field's domain does not start on a whole sample, so it cannot be cropped")
        origin.append(-int(lo))
    return tuple(origin)


def crop_field(stored: StoredField, *, keep: Box | None = None,
               remove: Sequence[int] | None = None) -> tuple[FieldConfig, dict[str, torch.Tensor], SignalInfo]:
    """The cropped field's config, weights and signal info: `keep` a box of the signal (sample units) or
    `remove` partitions by index. Raises `UserError` if the field cannot be cropped that way."""
    config, info = stored.config, stored.signal
    if (keep is None) == (remove is None):
        raise UserError("give exactly one of --keep REGION and --remove PARTITIONS")
    state = {k: v.detach() for k, v in stored.module.state_dict().items()}
    if remove is not None:
        if not isinstance(config, Partitioned):
            raise UserError(f"field {config.name!r} has no partitions to remove")
        new_config, new_state = config.without_parts(state, list(remove))
        return new_config, new_state, dataclasses.replace(info, extra={**info.extra, "removed_parts": list(remove)})
    if not isinstance(config, Croppable):
        raise UserError(f"field {config.name!r} cannot be cropped (it is not partitioned)")
    origin = _frame_origin(info)
    frame_box = tuple((lo + o, hi + o) for (lo, hi), o in zip(keep, origin))
    new_config, new_state = config.cropped(state, frame_box)
    shape = tuple(hi - lo for lo, hi in keep)
    domain = tuple((d_lo - lo, d_hi - lo) for (d_lo, d_hi), (lo, _) in zip(info.domain, keep))
    history = info.extra.get("cropped_from", []) + [[list(b) for b in keep]]
    new_info = dataclasses.replace(info, shape=shape, domain=domain, extra={**info.extra, "cropped_from": history})
    return new_config, new_state, new_info


def removal_summary(stored: StoredField, parts: Sequence[int]) -> str:
    """What removing `parts` from `stored` does to its render, for the line `crop --remove` prints.

    A Local-Global partition owns its box alone: the field renders 0 there. MINER's parts are the blocks of its
    pyramid, numbered scale by scale from the coarsest (`fieldlab info` counts them per scale), each scale's in
    stored order, and a block may cover padding past the signal's end. Every sample is the sum of one block of
    each scale, so a removed block takes its scale's share off every sample under it and leaves the other
    scales' there: a coarse block, which carries the base image, changes every sample it covers, a fine one
    their detail; a sample renders 0 only where no block of any scale is left."""
    config, info = stored.config, stored.signal
    noun = getattr(config, "part_noun", "partitions")
    removed = set(parts)
    if not hasattr(config, "part_scales"):  # parts that overlap nothing: each owns its box
        listed = ", ".join(map(str, sorted(removed)))
        return f"{noun} removed: {listed}; they render 0 now (a mid-grey hole in an image)"
    state = stored.module.state_dict()
    scales = config.part_scales(state)
    origin = _frame_origin(info)
    changed, covered = torch.zeros(info.shape, dtype=torch.bool), torch.zeros(info.shape, dtype=torch.bool)
    described = []
    for part, box in enumerate(config.part_boxes(state)):
        inside = tuple(slice(max(lo - o, 0), min(hi - o, n)) for (lo, hi), o, n in zip(box, origin, info.shape))
        inside = inside if all(s.start < s.stop for s in inside) else None
        if part in removed:
            where = ",".join(f"{s.start}:{s.stop}" for s in inside) if inside else "past the signal"
            described.append(f"{part} (scale {scales[part]} of {config.scales}, {where})")
        mask = changed if part in removed else covered
        if inside:
            mask[inside] = True
    return (f"{noun} removed: {', '.join(described)}. Each sample sums one block per scale (0 the coarsest), so "
            f"{int(changed.sum()):,} of {changed.numel():,} samples lose that scale's share and keep the others' "
            f"({int((changed & ~covered).sum()):,} are left with no block and render 0)")


def write_cropped(stored: StoredField, out: Path, *, keep: Box | None = None, remove: Sequence[int] | None = None,
                  force: bool = False, reconstruction: bool = True) -> StoredField:
    """Crop `stored` and write the result as a field DIR at `out` (atomically); returns the new field."""
    from fieldlab.edit.render import render
    from fieldlab.signals import get_modality, write_reconstruction
    from fieldlab.store import FieldDirWriter, check_out_dir, write_field

    check_out_dir(out, force)
    config, state, info = crop_field(stored, keep=keep, remove=remove)
    module = config.build()
    module.load_state_dict(state)
    before = sum(p.numel() for p in stored.module.parameters())
    after = sum(p.numel() for p in module.parameters())
    metrics = {k: v for k, v in stored.metrics.items() if k in ("steps", "seconds", "device", "precision")}
    metrics.update(params=after, params_before_crop=before,
                   crop={"keep": [list(b) for b in keep]} if keep is not None else {"remove": list(remove)})
    if "psnr" in stored.metrics:
        metrics["psnr_before_crop"] = stored.metrics.get("psnr")  # of the whole signal; the kept box is unmeasured
    result = StoredField(module.eval(), config, info, metrics, out)
    with FieldDirWriter(out, force) as folder:
        write_field(folder, module, config, info, metrics)
        if reconstruction and get_modality(info.kind).write is not None:  # a mesh field has no values to write
            raw = info.normalization.decode(render(result))
            write_reconstruction(folder, raw, info)
    return result
