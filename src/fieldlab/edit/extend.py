"""Extending a stored field to a larger signal (a wider image, a longer clip) without touching the old one.

The protocol (a partitioned field's config implements it; see `LocalGlobalConfig.extended`)::

    config.extended(state, shape) -> (config2, state2, new_parts)
        Grow the field so it covers `shape` samples of its frame (the grid it was fitted to, from the
        same origin; see edit/crop.py), adding parts (partitions, blocks) with fresh weights. Old parts
        keep their indices and weights; `new_parts` are the indices of the added ones. Parameters whose
        names start with `local_` are stacked per part along their first dimension; every other
        parameter is shared and stays frozen here.

`extend_field` first checks that the larger signal holds the old one at its origin (`_check_holds_old`: the
field's PSNR there against the one it recorded), then trains only the new parts, on the samples of the larger
signal routed to them: the shared weights are frozen (`requires_grad=False`) and a gradient hook zeroes the
old parts' slices, so Adam (no weight decay) leaves them exactly as they were, bit for bit, and the old region
renders unchanged (up to the float rounding of differently tiled batches, within 1e-7).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from fieldlab import _deadline
from fieldlab._errors import UserError
from fieldlab.fields import Extendable
from fieldlab.fit import FitConfig, Fitter, metrics_for, psnr_from_mse
from fieldlab.signals import Signal, SignalInfo, grid_coords
from fieldlab.store import StoredField


@dataclasses.dataclass
class Extended:
    """An extended field: the module, its config, the new signal's info and metrics."""

    field: StoredField
    prediction: torch.Tensor
    """The render of the whole new signal (*shape, c), in the field range."""


def _renormalized(signal: Signal, old: SignalInfo) -> torch.Tensor:
    """The new signal's values in the old field's normalization (its values must mean the same)."""
    if signal.info.kind != old.kind or signal.info.channels != old.channels:
        raise UserError(f"INPUT is a {signal.info.kind} with {signal.info.channels} channels; the field was "
                        f"fitted to a {old.kind} with {old.channels}")
    if signal.info.normalization == old.normalization:
        return signal.values
    if signal.info.normalization.dtype != old.normalization.dtype:
        raise UserError(f"INPUT holds {signal.info.normalization.dtype} values; the field was fitted to "
                        f"{old.normalization.dtype}")
    raw = signal.info.normalization.decode(signal.values)
    return old.normalization.encode(raw)


AGREEMENT_POINTS = 2**14
"""Samples of the old region that `_check_holds_old` compares (all of them when there are fewer)."""
AGREEMENT_MARGIN_DB = 6.0
AGREEMENT_FLOOR_DB = 20.0


def _check_holds_old(stored: StoredField, coords: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Refuse, before anything is fitted, an INPUT whose old region is not the signal the field was fitted to.

    `coords` and `values` (n, c) are INPUT's grid of `shape`, flattened, in the field's frame and range. The
    field's PSNR against INPUT on its old region (the first `stored.signal.shape` samples; `AGREEMENT_POINTS`
    of them drawn at random, less any cell a crop removed, which renders 0 and is fitted again) is compared
    with the PSNR recorded when the field was fitted (before a crop, for a cropped field). INPUT is refused
    when it reads more than `AGREEMENT_MARGIN_DB` below the record *and* below `AGREEMENT_FLOOR_DB`. The same
    signal reads within a fraction of a dB of the record (a random subsample of the same errors), or a few dB
    off where only part of it is measured (a cropped field's box); an INPUT that holds the old signal through
    another encoder or resize filter agrees at 25 dB or more, so the floor lets it through whatever the
    field's own quality. A different picture, or the full-resolution source of a downscaled field, reads 8-11
    dB (against a 23.5 dB Local-Global field of a DIV2K crop): refused. A field fitted below about 15 dB
    cannot tell them apart and lets INPUT through, as does one without a record (built in code)."""
    recorded = stored.metrics.get("psnr", stored.metrics.get("psnr_before_crop"))
    if recorded is None:
        return
    old = stored.signal
    count = math.prod(old.shape)
    picked = (torch.arange(count) if count <= AGREEMENT_POINTS else
              torch.randint(count, (AGREEMENT_POINTS,), generator=torch.Generator().manual_seed(0)))
    chosen = torch.zeros_like(picked)  # the same samples' flat indices in INPUT's larger grid
    for index, n in zip(torch.unravel_index(picked, old.shape), shape):
        chosen = chosen * n + index
    device = next(stored.module.parameters()).device
    with torch.no_grad():
        points = coords[chosen].to(device)
        route = getattr(stored.module, "route", None)  # partitions that a crop removed render 0: not compared
        kept = ~route(points)[1] if route is not None else torch.ones(len(points), dtype=torch.bool, device=device)
        error = (stored.module(points[kept]).float().cpu() - values[chosen][kept.cpu()]).square().mean()
    measured = psnr_from_mse(float(error))
    if measured < min(recorded - AGREEMENT_MARGIN_DB, AGREEMENT_FLOOR_DB):
        box = ",".join(f"0:{m}" for m in old.shape)
        raise UserError(f"INPUT does not hold the field's signal at its origin: the field matches INPUT's {box} at "
                        f"PSNR {measured:.1f} dB, against {recorded:.1f} dB recorded when it was fitted; give the "
                        "larger signal that starts with the old one, read as it was (the same --max-size, --span)")


def extend_field(stored: StoredField, signal: Signal, fit_config: FitConfig, *, progress: bool = False,
                 tensorboard_dir: Path | None = None, checkpoint: Path | None = None, resume: bool = False,
                 identity: str = "", say_limit=None) -> Extended:
    """Grow `stored` to cover `signal` (which holds the old signal at its origin) and fit the new parts;
    `progress` shows a bar (ETA, the batch PSNR of the new parts) as `fit` does, and `tensorboard_dir`
    gets a TensorBoard log of the same metrics. `checkpoint`, `resume` and `identity` are `fit`'s: the
    Fitter's state is saved there every `CHECKPOINT_SECONDS`, and a resumed extend ends as an uninterrupted one.
    `say_limit`: states the device's time budget once everything is checked (`fit.device_defaults.TimeLimit`)."""
    config, old = stored.config, stored.signal
    if not isinstance(config, Extendable):
        raise UserError(f"field {config.name!r} cannot be extended (it is not partitioned)")
    if len(signal.shape) != len(old.shape):
        raise UserError(f"INPUT has {len(signal.shape)} axes; the field has {len(old.shape)}")
    if any(n < m for n, m in zip(signal.shape, old.shape)) or tuple(signal.shape) == tuple(old.shape):
        raise UserError(f"INPUT ({'x'.join(map(str, signal.shape))}) must be larger than the field's signal "
                        f"({'x'.join(map(str, old.shape))}) along some axis and smaller along none")
    for key, unit in (("sample_rate", "Hz"), ("fps", "frames per second")):
        a, b = signal.info.extra.get(key), old.extra.get(key)
        if a and b and abs(a - b) > 1e-6 * b:
            raise UserError(f"INPUT runs at {a:g} {unit}; the field was fitted at {b:g} (its samples would "
                            "change their meaning)")
    fit_config.validate()
    values = _renormalized(signal, old)
    for lo, _ in old.domain:
        if lo != int(lo):
            raise UserError("this field's domain does not start on a whole sample, so it cannot be extended")
    origin = tuple(-int(lo) for lo, _ in old.domain)
    coords = grid_coords(old.domain, [(0.0, float(n)) for n in signal.shape], signal.shape)
    flat = values.reshape(-1, values.shape[-1])
    _check_holds_old(stored, coords, flat, tuple(signal.shape))
    frame_shape = tuple(o + n for o, n in zip(origin, signal.shape))
    state = {k: v.detach().cpu() for k, v in stored.module.state_dict().items()}
    torch.manual_seed(fit_config.seed)  # the new parts' initial weights: --seed draws them
    new_config, new_state, new_parts = config.extended(state, frame_shape)
    module = new_config.build()
    module.load_state_dict(new_state)
    if not new_parts:
        raise UserError("INPUT adds no new partitions to this field")

    # Only the new parts learn: shared weights are frozen, old parts' gradient slices are zeroed.
    first_new = min(new_parts)
    for name, parameter in module.named_parameters():
        if not name.startswith("local_"):
            parameter.requires_grad_(False)
            continue
        keep = torch.zeros(parameter.shape[0], *[1] * (parameter.ndim - 1))
        keep[new_parts] = 1.0
        parameter.register_hook(lambda grad, keep=keep: grad * keep.to(grad.device, grad.dtype))

    info = dataclasses.replace(signal.info, domain=old.domain, normalization=old.normalization,
                               extra={**signal.info.extra, "extended_from": list(old.shape)})
    if any(getattr(module, "overlap", ())):
        train_coords, train_values = module.training_points(coords, flat, signal.shape, slots=new_parts,
                                                            origin=origin)
    else:
        slot, void = module.route(coords)
        chosen = (slot >= first_new) & ~void
        train_coords, train_values = coords[chosen], flat[chosen]
    torch.manual_seed(fit_config.seed)
    fitter = Fitter(module, train_coords, train_values, fit_config, lr=fit_config.lr or type(new_config).lr,
                    betas=type(new_config).adam_betas, eps=type(new_config).adam_eps)
    _run(fitter, progress, tensorboard_dir, checkpoint=checkpoint, resume=resume, identity=identity,
         say_limit=say_limit)
    seconds = fitter.elapsed()
    prediction = fitter.predict(coords).cpu().reshape(*signal.shape, -1)
    module = fitter.field.cpu().eval()
    for parameter in module.parameters():
        parameter.requires_grad_(True)

    metrics = metrics_for(info.kind, prediction, values)
    old_region = tuple(slice(0, m) for m in old.shape)
    new_mask = torch.ones(signal.shape, dtype=torch.bool)
    new_mask[old_region] = False
    error = (prediction - values).square()[new_mask]
    metrics.update(psnr_new_region=round(psnr_from_mse(float(error.mean())), 4),
                   params=sum(p.numel() for p in module.parameters()),
                   params_before_extend=sum(p.numel() for p in stored.module.parameters()),
                   new_partitions=len(new_parts), steps=fitter.step_count, seconds=round(seconds, 3),
                   device=str(fitter.device), **fitter.deadline.report())
    return Extended(StoredField(module, new_config, info, metrics), prediction)


def _run(fitter: Fitter, progress: bool, tensorboard_dir: Path | None = None, *, checkpoint: Path | None = None,
         resume: bool = False, identity: str = "", say_limit=None) -> None:
    """Step `fitter` to its stop, the bar and TensorBoard updated every `log_every` steps (logging draws
    no random numbers); with `checkpoint`, saved there as `fit` saves (its helpers, so the file is the same)."""
    from fieldlab.fit import checkpoint as checkpoints, loop

    state = checkpoints.read_checkpoint(checkpoint, identity) if resume else None  # checked before the progress bar
    if say_limit:
        say_limit()
    log = loop.RunLog(None, tensorboard_dir, progress, fitter.config.steps)
    if state is not None:
        checkpoints.restore_fitter(fitter, log, state, checkpoint)
    saved = time.perf_counter()
    progress = progress or tensorboard_dir is not None  # either reads the loss
    try:
        while not fitter.should_stop():
            loss = fitter.step()
            log.advance(fitter.step_count, fitter.keep_seconds(), fitter.deadline)
            if progress and (fitter.step_count % fitter.config.log_every == 0 or fitter.should_stop()):
                with fitter.paused():
                    log.record(fitter.step_count, fitter.last_lr, fitter.elapsed(), loss=float(loss),
                               psnr=psnr_from_mse(float(loss)))
            # Host time, read without a device sync (extend logs its loss only for the bar).
            if (checkpoint is not None and time.perf_counter() - saved >= loop.CHECKPOINT_SECONDS
                    and not fitter.should_stop()):
                with fitter.paused():
                    checkpoints.save_fitter(fitter, log, checkpoint, identity)
                saved = time.perf_counter()
    finally:
        log.close()


def write_extended(stored: StoredField, signal: Signal, out: Path, fit_config: FitConfig, *,
                   force: bool = False, progress: bool = False, tensorboard: bool = False,
                   resume: bool = False, say_limit=None) -> Extended:
    """Extend `stored` to `signal` and write the field DIR `out` (atomically, only on success);
    `tensorboard` also logs to `out`/tensorboard. The fit keeps `fit`'s checkpoint beside `out` while it
    runs; `resume` continues from it."""
    from fieldlab.fit.job import checkpoint_path
    from fieldlab.signals import write_reconstruction
    from fieldlab.store import FieldDirWriter, check_out_dir, write_field

    check_out_dir(out, force)
    checkpoint = checkpoint_path(out)
    with FieldDirWriter(out, force) as folder:  # opened first: the TensorBoard log is written inside it
        with _deadline.limit(fit_config.max_seconds):  # from the command's start: fitting leaves time to write
            result = extend_field(stored, signal, fit_config, progress=progress,
                                  tensorboard_dir=folder / "tensorboard" if tensorboard else None,
                                  checkpoint=checkpoint, resume=resume, identity=_identity(stored, signal, fit_config),
                                  say_limit=say_limit)
        field = result.field
        write_field(folder, field.module, field.config, field.signal, field.metrics)
        raw = field.signal.normalization.decode(result.prediction)
        write_reconstruction(folder, raw, field.signal)
    checkpoint.unlink(missing_ok=True)  # the field is written: nothing is left to resume
    field.path = out
    return result


def _identity(stored: StoredField, signal: Signal, fit_config: FitConfig) -> str:
    """What a checkpoint of this extend must have been saved by: the options that shape the fit (as
    `fit`'s, less those a resumed run may change), the old field's config and weights and the new signal."""
    import hashlib

    from fieldlab import _json
    from fieldlab.fit.job import NOT_IDENTITY

    digest = hashlib.sha256()
    tensors = [*sorted(stored.module.state_dict().items()), ("signal", signal.values)]
    for name, tensor in tensors:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    options = {k: v for k, v in dataclasses.asdict(fit_config).items() if k not in NOT_IDENTITY}
    return _json.dumps({"fit": options, "config": stored.config.to_dict(), "shape": list(signal.shape),
                        "data": digest.hexdigest()}, sort_keys=True, default=list)
