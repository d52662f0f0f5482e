"""`fieldlab train` and `fieldlab eval`: networks on datasets of fields (see fieldlab.learn)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from fieldlab._errors import UserError
from fieldlab.cli._dataclass_options import config_command, options_of, resolved, write_resolved
from fieldlab.cli._options import parse_extra
from fieldlab.cli.main import app
from fieldlab.learn.eval_options import EvalConfig
from fieldlab.learn.sdf import SDFConfig
from fieldlab.learn.train import TrainConfig


def _net_options(options: dict, args: list[str], generated: dict) -> dict:
    """The network's options: a config file's (its `net_options`, or keys that name no flag), then the command
    line's free `--name VALUE` words; `options` keeps the flags' own."""
    net = {k: options.pop(k) for k in list(options) if k not in generated}
    nested = net.pop("net_options", {})
    if not isinstance(nested, dict):
        raise UserError(f"net_options in a config file must be a table of network options, got {nested!r}")
    return {**nested, **net, **parse_extra(args)}


TRAIN_HELP = ("Train a network (--net dinet, dinet2, dinet4, cnn2, cnn4, nuft, mlp, transformer; segmenters "
              "dinet3, dinet5, fcn3, fcn5, nuft_seg, seg_hyper on a store of sample:shapes) on the labelled fields of "
              "STORE and write RUN. Network options follow as --name VALUE (e.g. --channels 32 --support 0.15).")


@app.command("train", help=TRAIN_HELP, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@config_command(options_of(TrainConfig, skip=("net_options",)), positional={"store": "STORE"}, extras=True)
def train_command(
    ctx: typer.Context,
    store: Path = typer.Argument(..., help="A FieldStore written by fit-dataset."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    resume: bool = typer.Option(False, help="Continue RUN from its checkpoint."),
    force: bool = typer.Option(False, help="Replace a non-empty RUN."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    tensorboard: bool = typer.Option(False, help="Also log to RUN/tensorboard (needs fieldlab[tensorboard])."),
    options: dict = None,
) -> None:
    from fieldlab.learn.train import train

    store = options.pop("store")
    config = TrainConfig(net_options=_net_options(options, ctx.args, train_command.generated), **options)
    metrics = train(store, out, config, resume=resume, force=force, tensorboard=tensorboard, bar=not quiet)
    if "test_accuracy" in metrics:
        print(f"test accuracy {100 * metrics['test_accuracy']:.1f}% on {metrics['test_fields']} fields; wrote {out}")
    elif "test_miou" in metrics:
        print(f"test mIoU {metrics['test_miou']:.3f}, pixel accuracy {100 * metrics['test_pixel_accuracy']:.1f}% "
              f"on {metrics['test_fields']} fields; wrote {out}")


@app.command("eval")
@config_command(options_of(EvalConfig), positional={"run": "RUN", "stores": "[STORES]..."})
def eval_command(
    run: Path = typer.Argument(..., help="A run folder written by train."),
    stores: Optional[List[Path]] = typer.Argument(None, help="FieldStores to test on: one, or several of the same "
                                                             "signals fitted as other fields (a row block each); an "
                                                             "SDF run needs none: its scenes, or the store it trained "
                                                             "on, are recorded."),
    out: Optional[Path] = typer.Option(None, help="Where to write eval.csv, eval.json and eval.png (default RUN)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    options: dict = None,
) -> None:
    """Accuracy (mIoU for segmenters, SDF error for train-sdf runs) of RUN for every store, test point set and
    resolution, each cell's drop from the training cell, and the invariance gaps across point sets and across
    resolutions: a table, eval.csv, eval.json and eval.png."""
    from fieldlab._errors import UserError
    from fieldlab.learn.evaluate import (evaluate_table, format_summary, format_table, legend, summarize, write_csv,
                                         write_json, write_plot)

    config = EvalConfig(**{k: v for k, v in options.items() if k not in ("run", "stores")})
    run, stores, points, resolutions = options["run"], options.get("stores"), config.points, config.resolutions
    kinds = [k for k in points.replace(" ", ",").split(",") if k]
    if not kinds:
        raise UserError("--points names no point set; give some of grid,qmc,rqmc,random,shrunk")
    try:
        sides = [int(s) for s in (resolutions or "").replace(" ", ",").split(",") if s]
    except ValueError:
        raise UserError(f"--resolutions takes grid sides like 8,16,32, got {resolutions!r}") from None
    rows, cell = evaluate_table(run, stores or None, points=kinds, resolutions=sides, device=config.device,
                                draws=config.draws, max_seconds=config.max_seconds,
                                progress=not quiet)
    summary = summarize(rows, cell)
    print(legend(rows, cell))
    print(format_table(rows, cell))
    print(format_summary(rows, cell, summary))
    folder = out or run
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(rows, folder / "eval.csv")
    write_json(rows, summary, folder / "eval.json")
    plotted = write_plot(rows, cell, summary, folder / "eval.png")
    fixed = {"run": str(run), "stores": [str(p) for p in stores or []]}
    write_resolved(folder / "eval.config.json", resolved(options, eval_command.generated, **fixed))
    print(f"wrote {folder / 'eval.csv'}, {folder / 'eval.json'}" +
          (f" and {folder / 'eval.png'}" if plotted else ""))  # else plots.pyplot's note said why


@app.command("train-sdf", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@config_command(options_of(SDFConfig, skip=("net_options",)), extras=True)
def train_sdf_command(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Run folder to write (net.safetensors, run.json)."),
    force: bool = typer.Option(False, help="Replace a non-empty RUN."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    tensorboard: bool = typer.Option(False, help="Also log to RUN/tensorboard (needs fieldlab[tensorboard])."),
    resume: bool = typer.Option(False, help="Continue RUN from its checkpoint (the same command and options)."),
    options: dict = None,
) -> None:
    """DI-Net's SDF task: ball-scene occupancy field in (exact, or fitted fields with --store), SDF out at
    arbitrary query points; prints the held-out mean absolute SDF error beside a constant baseline.
    `fieldlab eval RUN` then tabulates the error per test point set and resolution. Network options
    follow as --name VALUE."""
    from fieldlab.fit.device_defaults import time_limit
    from fieldlab.fit.loop import resolve_device
    from fieldlab.learn.sdf import train_sdf
    from fieldlab.store.field_dir import check_out_dir

    store = options.get("store")
    check_out_dir(out, force, resume=resume, resumable=True, inputs=[None if store is None else Path(store)])
    config = SDFConfig(net_options=_net_options(options, ctx.args, train_sdf_command.generated), **options)
    config.validate()  # before anything is written
    metrics = train_sdf(config, out, bar=not quiet, tensorboard=tensorboard, resume=resume)
    # the time limit actually used (the device's, when unset), as train_sdf resolved it
    used = time_limit(config.max_seconds, resolve_device(config.device)).seconds
    write_resolved(out / "config.json", {**dataclasses.asdict(config), "max_seconds": used})
    print(f"test SDF mean absolute error {metrics['test_mae']:.4f} on {metrics['test_scenes']} scenes "
          f"(constant baseline {metrics['baseline_mae']:.4f}); wrote {out}")
