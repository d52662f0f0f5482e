"""`fieldlab crop` and `fieldlab extend`: editing partitioned fields (thin layers over fieldlab.edit)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fieldlab._errors import UserError
from fieldlab.cli.main import app


def _local_share(module) -> int:
    return sum(p.numel() for name, p in module.named_parameters() if name.startswith("local_"))


@app.command("crop")
def crop_command(
    dir: Path = typer.Argument(..., help="Field DIR of a partitioned field."),
    out: Path = typer.Option(..., "--out", help="Field DIR to write."),
    keep: Optional[str] = typer.Option(None, help="Box to keep, START:STOP per axis in samples, e.g. 0:128,0:96."),
    remove: Optional[str] = typer.Option(None, help="Partition indices to delete, e.g. 0,5,6."),
    reconstruction: bool = typer.Option(True, help="Also render the cropped field into DIR2."),
    force: bool = typer.Option(False, help="Replace a non-empty --out."),
) -> None:
    """Delete the weights of partitions outside a box (or the listed ones): a smaller field that renders
    the kept region exactly as before."""
    from fieldlab.edit.crop import parse_box, parse_parts, write_cropped
    from fieldlab.fields import Partitioned
    from fieldlab.store import check_out_dir, load_field

    if (keep is None) == (remove is None):
        raise UserError("give exactly one of --keep REGION and --remove PARTITIONS")
    check_out_dir(out, force, inputs=[dir])
    stored = load_field(dir)
    box = parse_box(keep, stored.signal.shape) if keep is not None else None
    parts = parse_parts(remove) if remove is not None else None
    result = write_cropped(stored, out, keep=box, remove=parts, force=force, reconstruction=reconstruction)
    before, after = result.metrics["params_before_crop"], result.metrics["params"]
    local_before, local_after = _local_share(stored.module), _local_share(result.module)
    parts_note = ""
    if isinstance(stored.config, Partitioned):
        noun = getattr(stored.config, "part_noun", "partitions")
        parts_note = f"{result.config.num_parts} of {stored.config.num_parts} {noun}, "
    local_note = f" (local {local_after:,} of {local_before:,}: {local_after / local_before:.1%})" if local_before else ""
    print(f"cropped to {'x'.join(map(str, result.signal.shape))}: {parts_note}{after:,} of {before:,} parameters "
          f"({after / before:.1%}){local_note} -> {out}")


@app.command("extend")
def extend_command(
    dir: Path = typer.Argument(..., help="Field DIR of a partitioned field."),
    input: str = typer.Argument(..., help="The larger signal (file or sample:NAME) holding the old one at its origin."),
    out: Path = typer.Option(..., "--out", help="Field DIR to write."),
    steps: int = typer.Option(2000, help="Adam steps for the new partitions."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (default: the field's tuned one)."),
    max_size: Optional[int] = typer.Option(None, help="Downsample INPUT so no spatial axis exceeds this."),
    max_frames: Optional[int] = typer.Option(None, help="Read at most this many frames of a video."),
    span: Optional[str] = typer.Option(None, help="START:STOP in seconds of a clip or video."),
    modality: Optional[str] = typer.Option(None, help="Force the kind of INPUT."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    seed: int = typer.Option(0, help="Random seed of the new partitions and the batches."),
    force: bool = typer.Option(False, help="Replace a non-empty --out."),
) -> None:
    """Grow a field to a larger signal: new partitions are added and trained against the frozen global
    branch, so the old region renders exactly as before."""
    from fieldlab.edit.extend import write_extended
    from fieldlab.fit import FitConfig, resolve_device
    from fieldlab.signals import load_signal, parse_span
    from fieldlab.store import check_out_dir, load_field

    check_out_dir(out, force, inputs=[dir, input])
    fit_config = FitConfig(steps=steps, lr=lr, device=device, seed=seed)
    fit_config.validate()
    resolve_device(device)
    stored = load_field(dir)
    signal = load_signal(input, max_size=max_size, max_frames=max_frames, modality=modality,
                         span=parse_span(span) if span else None)
    result = write_extended(stored, signal, out, fit_config, force=force)
    m = result.field.metrics
    print(f"extended {'x'.join(map(str, stored.signal.shape))} -> {'x'.join(map(str, signal.shape))}: "
          f"{m['new_partitions']} new partitions, {m['params_before_extend']:,} -> {m['params']:,} parameters; "
          f"PSNR {m['psnr']:.2f} dB (new region {m['psnr_new_region']:.2f} dB) after {m['steps']} steps "
          f"in {m['seconds']:.1f} s -> {out}")
