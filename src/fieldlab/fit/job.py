"""A whole fitting job: input → field DIR (weights, JSON, metrics, reconstruction, resolved config, log)."""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from pathlib import Path
from typing import Any

from fieldlab import _deadline, _json, plots
from fieldlab._errors import UserError
from fieldlab._pipeline import Forked
from fieldlab._validate import LIMITS, bounded_int, check_memory
from fieldlab.fields import FieldConfig, coerce_option, get_config_class
from fieldlab.fit.config import FitConfig, points_per_step, single_kernel
from fieldlab.fit.device_defaults import resolve_batch, time_limit
from fieldlab.fit.own_engines import engine_for, engine_options
from fieldlab.fit.loop import FitResult, fit, own_trainer, resolve_device, warm_device
from fieldlab.signals import (get_modality, kind_is_known, kind_of, load_signal, parse_span,
                              reconstruction_name, write_reconstruction)
from fieldlab.store import FieldDirWriter, check_out_dir, write_field

log = logging.getLogger("fieldlab")
DERIVED = ("in_dim", "out_dim")


@dataclasses.dataclass(frozen=True)
class FitJob:
    """Everything `fieldlab fit` needs; `to_dict()` is the resolved config written beside the field."""

    input: str
    """Signal file or sample:NAME (sample:camera, …)."""
    field: str = "siren"
    """Architecture (see `fieldlab fields`)."""
    field_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    fit: FitConfig = FitConfig()
    max_size: int | None = None
    """Downsample (anti-aliased) so no spatial axis exceeds this."""
    max_frames: int | None = None
    """Read at most this many frames of a video."""
    modality: str | None = None
    """Force the kind: image, audio, video, volume or mesh."""
    span: str | None = None
    """START:STOP in seconds: fit part of a clip or video."""
    params: int | None = None
    """Size the field to about this many parameters."""
    mesh_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Options of `OccupancyConfig` (points, resolution, …) for a mesh input."""
    train_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Options of the field's own engine (`OwnEngine.options`: MINER's pruning, retirement and memory budget);
    `run_fit_job` also takes them from `field_options`, where the command line gives them."""

    def to_dict(self) -> dict[str, Any]:
        fit_options = dataclasses.asdict(self.fit)
        return {"input": self.input, "field": self.field, **self.field_options, **self.train_options, **fit_options,
                "max_size": self.max_size, "max_frames": self.max_frames, "modality": self.modality, "span": self.span,
                "params": self.params, **self.mesh_options}


def resolve_field_config(name: str, options: dict[str, Any], *, kind: str, in_dim: int, out_dim: int,
                         shape: tuple[int, ...], params: int | None, max_params: int | None = None) -> FieldConfig:
    """The field's config for a signal of `kind` sampled on `shape`: its dims, the kind's defaults, options
    that depend on the grid, and the size budget (`params`, else at most `max_params` when given). The
    kind's defaults are its modality's presets for the architecture (`Modality.field_defaults`)."""
    derived = sorted(set(options) & set(DERIVED))
    if derived:
        raise UserError(f"--{derived[0].replace('_', '-')} is set from the signal and cannot be given")
    defaults = get_modality(kind).field_defaults.get(name, {})
    config = get_config_class(name).from_options(
        {"in_dim": in_dim, "out_dim": out_dim, **defaults, **options}).adapt(shape)
    if params is not None:
        params = bounded_int(params, "--params", 1, LIMITS.params)  # checked, never allocated
        sized = config.with_params(params)
        if sized.num_params() > 2 * params:  # the knob at its least is still far above the budget
            raise UserError(f"--params {params:,} is below the smallest {name} field with these options "
                            f"({sized.num_params():,} parameters)")
        config = sized
    elif max_params is not None and config.size_knob not in options and config.num_params() > max_params:
        sized = config.with_params(max_params)  # the closest size, then down to at most the values
        knob = sized.size_knob
        while sized.num_params() > max_params and getattr(sized, knob) > 1:
            sized = sized.replace(**{knob: getattr(sized, knob) - 1})
        if sized.num_params() <= max_params:
            config = sized
            log.info("%s sized to %s parameters, at most the signal's %s (--params or --%s chooses)",
                     name, f"{config.num_params():,}", _values(max_params), knob.replace("_", "-"))
        else:  # even its smallest size is larger than the signal: a degenerate field helps nobody
            log.info("%s keeps its default size (%s parameters): its smallest is above the signal's %s",
                     name, f"{config.num_params():,}", _values(max_params))
    return config  # every config was built through from_options/replace, which bound num_params by LIMITS


def _values(n: int) -> str:
    return f"{n:,} value" + ("" if n == 1 else "s")


def check_fit_memory(config: FieldConfig, points: int, device: str) -> None:
    """One line, before the field is built, when fitting it with `points` points per step would need more
    memory than the device (CUDA) or the machine has free: a too-large but legal --params is not a hang."""
    import torch

    need = config.fit_bytes(points)
    what = f"fitting a {config.name} field of {config.num_params():,} parameters on {points:,} points per step"
    target = resolve_device(device)
    if target.type != "cuda":
        check_memory(need, what)
        return
    free = torch.cuda.mem_get_info(target)[0]
    if need > free:
        raise UserError(f"{what} needs about {need / 2**30:.1f} GB; {target} has {free / 2**30:.1f} GB free")


def engine_training(job: FitJob) -> tuple[FitJob, Any]:
    """The job with its engine's options moved from `field_options` to `train_options`, and the engine's
    training config built from them (checked: one UserError naming the flag), or None for the standard loop."""
    options_class = engine_options(get_config_class(job.field))
    if options_class is None:
        if job.train_options:
            get_config_class(job.field).check_option_names(job.train_options)  # names them as the field's
        return job, None
    names = {f.name for f in dataclasses.fields(options_class)}
    moved = {k: v for k, v in job.field_options.items() if k in names}
    job = dataclasses.replace(job, field_options={k: v for k, v in job.field_options.items() if k not in names},
                              train_options={**job.train_options, **moved})
    hints = typing.get_type_hints(options_class)
    train = options_class(**{k: coerce_option(k, v, hints[k]) for k, v in job.train_options.items()})
    train.validate()
    return dataclasses.replace(job, train_options=dataclasses.asdict(train)), train  # resolved, as config.json says


def checkpoint_path(out: Path) -> Path:
    """Where a fit into `out` keeps its checkpoint until the folder is written: a hidden file beside it."""
    return out.parent / f".{out.name}.checkpoint.pt"


# Options that change only when a fit stops or where it runs: a resumed fit may change them.
NOT_IDENTITY = ("device", "max_seconds", "target_psnr", "log_every", "eval_chunk")


def run_fit_job(job: FitJob, out: Path, *, force: bool = False, progress: bool = True,
                tensorboard: bool = False, resume: bool = False) -> FitResult:
    """Check everything, fit, and write the field DIR `out` (replaced only when the fit succeeds). A fit
    of the standard loop keeps a checkpoint beside `out` while it runs; `resume` continues from it.
    `--max-seconds` bounds all of it: the fit stops early enough to leave time for the rest."""
    # The time limit is the device's unless given, and config.json and the command's deadline say which.
    device = resolve_device(job.fit.device)
    warm_device(device)  # the context is made while the options are checked and the signal is read
    limit = time_limit(job.fit.max_seconds, device, quiet=not progress)
    job = dataclasses.replace(job, fit=dataclasses.replace(job.fit, max_seconds=limit.seconds))
    with _deadline.limit(job.fit.max_seconds):
        return _run_fit_job(job, out, force=force, progress=progress, tensorboard=tensorboard, resume=resume,
                            say_limit=limit.say)  # said once the input is checked


def _run_fit_job(job: FitJob, out: Path, *, force: bool, progress: bool, tensorboard: bool,
                 resume: bool, say_limit=None) -> FitResult:
    check_out_dir(out, force, inputs=[job.input])
    job.fit.validate()
    job, train = engine_training(job)
    kind = kind_of(job.input, job.modality)
    # The options are checked before the signal is read, in the dimension of its kind; a TIFF may be an
    # image or a stack (a volume), which only reading tells, so there only their names are checked.
    options = {k: v for k, v in job.field_options.items() if k not in DERIVED}
    if not kind_is_known(job.input, job.modality):
        get_config_class(job.field).check_option_names(options)
    else:
        get_config_class(job.field).from_options({**options, "in_dim": get_modality(kind).dims})
    if get_modality(kind).occupancy:
        return _run_mesh_job(job, out, force=force, progress=progress, tensorboard=tensorboard, resume=resume,
                             train=train)
    if job.mesh_options:
        raise UserError(f"--{next(iter(job.mesh_options)).replace('_', '-')} applies to meshes only")
    span = parse_span(job.span) if job.span else None
    signal = load_signal(job.input, max_size=job.max_size, max_frames=job.max_frames, modality=job.modality, span=span)
    # Unasked, a field gets no more parameters than its signal has values: a representation larger than
    # the data is rarely what is wanted, and it keeps small fits fast on a laptop.
    config = resolve_field_config(job.field, job.field_options, kind=signal.info.kind, in_dim=signal.info.in_dim,
                                  out_dim=signal.info.channels, shape=signal.shape, params=job.params,
                                  max_params=signal.values.numel())
    points = signal.values[..., 0].numel()
    # the batch that fit() resolves (the standard loop's; engines of their own choose theirs), for the checks
    fit_bytes = config.fit_bytes if engine_for(config) is None else None
    per_step = points_per_step(resolve_batch(job.fit, resolve_device(job.fit.device), points, config.num_params(),
                                             fit_bytes=fit_bytes, say=False), points)
    check_fit_memory(config, per_step, job.fit.device)
    if job.fit.kernel != "auto" and engine_for(config) is None:  # --kernel's refusal before the notes below
        single_kernel(config, job.fit, resolve_device(job.fit.device), per_step, points)
    kind_lr = get_modality(signal.info.kind).field_lr.get(job.field)
    if job.fit.lr is None and kind_lr:
        job = dataclasses.replace(job, fit=dataclasses.replace(job.fit, lr=kind_lr))
    if say_limit:  # now that the input is checked: a user error stays one line
        say_limit()
    checkpoint = checkpoint_path(out)
    identity = run_identity(job, config)
    if resolve_device(job.fit.device).type == "cuda":
        plots.preload()  # error.png's and training.png's matplotlib, imported while the GPU fits
    with FieldDirWriter(out, force) as folder:
        result = fit(signal, config, job.fit, log_path=folder / "log.jsonl",
                     tensorboard_dir=folder / "tensorboard" if tensorboard else None, progress=progress,
                     checkpoint=checkpoint, resume=resume, identity=identity, train=train)
        config = result.config  # a field's own trainer may resolve more of its config (e.g. MINER's blocks)
        if signal.info.extra.get("format") in ("exr", "hdr"):  # linear values: say what the PSNR is relative to
            result.metrics["psnr_peak"] = signal.info.normalization.scale
            log.info("PSNR is on the linear values, relative to a peak of %g (the image's max - min)",
                     signal.info.normalization.scale)
        whole = result.prediction is not None  # else a time limit left the final evaluation a part of the samples
        pictures = [lambda: plots.write_training_plot(folder / "log.jsonl", folder / "training.png")]
        if whole:
            pictures.insert(0, lambda: plots.write_error_map(signal.values, result.prediction, signal.info.kind,
                                                             folder / "error.png", metrics=result.metrics,
                                                             sample_rate=signal.info.extra.get("sample_rate")))
        first = "error.png" if whole and signal.info.kind in plots.ERROR_MAP_KINDS else "training.png"
        with Forked(pictures, parallel=plots.ready(first)):  # drawn beside the writes, given the cores
            write_field(folder, result.field, config, signal.info, result.metrics)
            if whole:
                write_reconstruction(folder, signal.info.normalization.decode(result.prediction), signal.info)
            _write_run_files(result, folder, job, config)
    checkpoint.unlink(missing_ok=True)  # the field is written: nothing is left to resume
    return result


def run_identity(job: FitJob, config: FieldConfig) -> str:
    """What a checkpoint must have been saved by for --resume to continue it: the options and the field."""
    return _json.dumps({"job": {k: v for k, v in job.to_dict().items() if k not in NOT_IDENTITY},
                        "config": config.to_dict()}, sort_keys=True, default=list)


def _run_mesh_job(job: FitJob, out: Path, *, force: bool, progress: bool, tensorboard: bool = False,
                  resume: bool = False, train=None):
    """A mesh is fitted as an occupancy field; its reconstruction is the field's zero level set."""
    from fieldlab.signals.mesh_export import write_mesh
    from fieldlab.fit.occupancy import OccupancyConfig, fit_mesh, refuse_fused_kernel
    from fieldlab.signals import check_file
    from fieldlab.signals.mesh import read_mesh

    for flag, value in (("--span", job.span), ("--max-frames", job.max_frames), ("--max-size", job.max_size)):
        if value is not None:
            raise UserError(f"{flag} does not apply to meshes")
    names = {f.name for f in dataclasses.fields(OccupancyConfig)}
    unknown = sorted(set(job.mesh_options) - names)
    if unknown:
        raise UserError(f"--{unknown[0].replace('_', '-')} is not a mesh option")
    hints = typing.get_type_hints(OccupancyConfig)
    occupancy = OccupancyConfig(**{k: coerce_option(k, v, hints[k]) for k, v in job.mesh_options.items()})
    occupancy.validate()
    config = resolve_field_config(job.field, job.field_options, kind="mesh", in_dim=3, out_dim=1,
                                  shape=(occupancy.resolution,) * 3, params=job.params)
    trainer = own_trainer(config, "fit_mesh", fit_mesh, job.fit.precision)
    if trainer is fit_mesh:  # the occupancy's cross-entropy (an own trainer, MINER's, fits squared errors)
        refuse_fused_kernel(job.fit)
    check_fit_memory(config, points_per_step(job.fit, occupancy.points), job.fit.device)  # before the mesh is read
    mesh = read_mesh(check_file(job.input))
    checkpoint = checkpoint_path(out)
    with FieldDirWriter(out, force) as folder:
        result = trainer(
            mesh, config, job.fit, occupancy, log_path=folder / "log.jsonl",
            tensorboard_dir=folder / "tensorboard" if tensorboard else None, progress=progress,
            checkpoint=checkpoint, resume=resume, identity=run_identity(job, config),
            **({"train": train} if train is not None else {}))
        config = result.config
        info = mesh.info(occupancy.resolution)
        surface = result.reconstruction
        title = f"{len(surface.faces):,} faces of {reconstruction_name(info)}"
        pictures = [lambda: plots.write_mesh_preview(surface.vertices, surface.faces, folder / "preview.png",
                                                     title=title),
                    lambda: plots.write_training_plot(folder / "log.jsonl", folder / "training.png")]
        with Forked(pictures, parallel=plots.ready("preview.png")):
            write_field(folder, result.field, config, info, result.metrics)
            write_mesh(folder / reconstruction_name(info), surface.vertices, surface.faces)
            _write_run_files(result, folder, job, config)
    checkpoint.unlink(missing_ok=True)  # the field is written: nothing is left to resume
    return result


def _write_run_files(result, folder: Path, job: FitJob, config: FieldConfig) -> None:
    """The files a trainer asks for beside the reconstruction (name → writer(path)), and config.json: the
    job with the resolved field options, so `--config DIR/config.json` repeats the run."""
    for name, write in getattr(result, "extra_files", {}).items():
        write(folder / name)
    resolved = dataclasses.replace(job, params=None, field_options={
        k: v for k, v in config.to_dict().items() if k not in DERIVED and k not in config.resolved})
    (folder / "config.json").write_text(json.dumps(resolved.to_dict(), indent=2, default=list) + "\n")
