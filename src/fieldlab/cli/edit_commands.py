"""`fieldlab crop` and `fieldlab extend`: editing partitioned fields (thin layers over fieldlab.edit)."""

from __future__ import annotations

from pathlib import Path
import typer

from fieldlab._errors import UserError
from fieldlab.cli._dataclass_options import config_command, options_of, resolved, write_resolved
from fieldlab.cli.main import app
from fieldlab.edit.options import CropConfig
from fieldlab.fit.config import FitConfig
from fieldlab.fit.job import FitJob


def _local_share(module) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if name.startswith("local_"))


@app.command("crop")
@config_command(options_of(CropConfig), positional={"dir": "DIR"})
def crop_command(
    dir: Path = typer.Argument(..., help="Field DIR of a partitioned field."),
    out: Path = typer.Option(..., "--out", help="Field DIR to write."),
    force: bool = typer.Option(False, help="Replace a non-empty --out."),
    options: dict = None,
) -> None:
    """Delete the weights of partitions outside a box (or the listed ones): a smaller field that renders
    the kept region exactly as before."""
    from fieldlab.edit.crop import parse_box, parse_parts, removal_summary, write_cropped
    from fieldlab.fields import Partitioned
    from fieldlab.store import check_out_dir, load_field

    config = CropConfig(**{k: v for k, v in options.items() if k != "dir"})
    dir, keep, remove = options["dir"], config.keep, config.remove
    if (keep is None) == (remove is None):
        raise UserError("give exactly one of --keep REGION and --remove PARTITIONS")
    check_out_dir(out, force, inputs=[dir])
    stored = load_field(dir)
    box = parse_box(keep, stored.signal.shape) if keep is not None else None
    parts = parse_parts(remove) if remove is not None else None
    result = write_cropped(stored, out, keep=box, remove=parts, force=force, reconstruction=config.reconstruction)
    write_resolved(out / "config.json", resolved(options, crop_command.generated, dir=str(dir)))
    before, after = result.metrics["params_before_crop"], result.metrics["params"]
    local_before, local_after = _local_share(stored.module), _local_share(result.module)
    parts_note = ""
    if isinstance(stored.config, Partitioned):
        noun = getattr(stored.config, "part_noun", "partitions")
        parts_note = f"{result.config.num_parts} of {stored.config.num_parts} {noun}, "
    local_note = f" (local {local_after:,} of {local_before:,}: {local_after / local_before:.1%})" if local_before else ""
    print(f"cropped to {'x'.join(map(str, result.signal.shape))}: {parts_note}{after:,} of {before:,} parameters "
          f"({after / before:.1%}){local_note} -> {out}")
    if parts is not None:
        print(removal_summary(stored, parts))


@app.command("extend")
@config_command(options_of(FitConfig, only=("steps", "lr", "device", "seed", "max_seconds", "precision")),
                options_of(FitJob, only=("max_size", "max_frames", "span", "modality")),
                positional={"dir": "DIR", "input": "INPUT"})
def extend_command(
    dir: Path = typer.Argument(..., help="Field DIR of a partitioned field."),
    input: str = typer.Argument(..., help="The larger signal (file or sample:NAME) holding the old one at its origin "
                                    "(read as for fit: refused when the field does not match it there)."),
    out: Path = typer.Option(..., "--out", help="Field DIR to write."),
    force: bool = typer.Option(False, help="Replace a non-empty --out."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    tensorboard: bool = typer.Option(False, help="Also log to OUT/tensorboard (needs fieldlab[tensorboard])."),
    resume: bool = typer.Option(False, help="Continue an interrupted extend from the checkpoint it keeps beside --out "
                                "(the same command and options)."),
    options: dict = None,
) -> None:
    """Grow a field to a larger signal: new partitions are added and trained against the frozen global
    branch, so the old region renders exactly as before."""
    import dataclasses

    from fieldlab.edit.extend import write_extended
    from fieldlab.fit import resolve_device
    from fieldlab.fit.device_defaults import time_limit
    from fieldlab.signals import load_signal, parse_span
    from fieldlab.store import check_out_dir, load_field

    dir, input = options.pop("dir"), options.pop("input")
    check_out_dir(out, force, inputs=[dir, input])
    fit_config = FitConfig(**{k: options[k] for k in ("steps", "lr", "device", "seed", "max_seconds", "precision")
                              if k in options})
    fit_config.validate()
    # the budget actually used goes into config.json; the note that states it waits until the input is checked
    limit = time_limit(fit_config.max_seconds, resolve_device(fit_config.device), quiet=quiet)
    fit_config = dataclasses.replace(fit_config, max_seconds=limit.seconds)
    options["max_seconds"] = limit.seconds
    stored = load_field(dir)
    span = options.get("span")
    signal = load_signal(input, max_size=options.get("max_size"), max_frames=options.get("max_frames"),
                         modality=options.get("modality"), span=parse_span(span) if span else None)
    result = write_extended(stored, signal, out, fit_config, force=force, progress=not quiet, tensorboard=tensorboard,
                            resume=resume, say_limit=limit.say)
    write_resolved(out / "config.json", resolved(options, extend_command.generated, dir=str(dir), input=input))
    m = result.field.metrics
    print(f"extended {'x'.join(map(str, stored.signal.shape))} -> {'x'.join(map(str, signal.shape))}: "
          f"{m['new_partitions']} new partitions, {m['params_before_extend']:,} -> {m['params']:,} parameters; "
          f"PSNR {m['psnr']:.2f} dB (new region {m['psnr_new_region']:.2f} dB) after {m['steps']} steps "
          f"in {m['seconds']:.1f} s -> {out}")
