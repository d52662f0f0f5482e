"""`fieldlab train` and `fieldlab eval`: networks on datasets of fields (see fieldlab.learn)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from fieldlab.cli._options import parse_extra
from fieldlab.cli.main import app

TRAIN_HELP = ("Train a network (--net dinet, dinet2, dinet4, cnn2, cnn4, nuft, mlp, transformer; segmenters "
              "dinet3, dinet5, fcn3, fcn5, nuft_seg, seg_hyper on a store of sample:shapes) on the labelled fields of "
              "STORE and write RUN. Network options follow as --name VALUE (e.g. --channels 32 --support 0.15).")


@app.command("train", help=TRAIN_HELP, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_command(
    ctx: typer.Context,
    store: Path = typer.Argument(..., help="A FieldStore written by fit-dataset."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    net: str = typer.Option("dinet", help="Network name."),
    points: str = typer.Option("auto", help="Training point set: grid, qmc, rqmc (redrawn each step), random, shrunk, "
                                            "mixed, or auto (the network's own: mixed for dinet, else rqmc)."),
    num_points: int = typer.Option(256, help="Points per field per step."),
    sequence: str = typer.Option("sobol", help="QMC sequence: sobol or halton."),
    mix: str = typer.Option("rqmc,grid,random,shrunk", help="With --points mixed: the point sets to draw from, one per "
                                                            "step (the first is eval's training cell)."),
    resolutions: str = typer.Option("", help="Resolution augmentation: grid sides (e.g. 12,16,24), one drawn per step, "
                                             "each giving side^d points; supports stay sized for --num-points."),
    steps: int = typer.Option(600, help="Optimizer steps."),
    batch_size: int = typer.Option(64, help="Fields per step (global, over all processes)."),
    lr: float = typer.Option(2e-3, help="Peak AdamW learning rate (warm-up, then cosine)."),
    weight_decay: float = typer.Option(1e-3, help="AdamW weight decay."),
    jitter: float = typer.Option(0.0, help="Coordinate jitter (canonical units)."),
    noise: float = typer.Option(0.01, help="Intensity noise."),
    flip: bool = typer.Option(False, help="Random horizontal flips."),
    seed: int = typer.Option(0, help="Random seed."),
    init_from: Optional[str] = typer.Option(None, "--init-from", help="A finished run of cnn2 or cnn4 (trained "
                                            "on grids): its CNN, translated, starts the DI-Net (--net dinet)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    resume: bool = typer.Option(False, help="Continue RUN from its checkpoint."),
    force: bool = typer.Option(False, help="Replace a non-empty RUN."),
) -> None:
    from fieldlab.learn.train import TrainConfig, train

    config = TrainConfig(net=net, net_options=parse_extra(ctx.args), points=points, num_points=num_points,
                         sequence=sequence, mix=mix, resolutions=resolutions, steps=steps, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, jitter=jitter, noise=noise, flip=flip, seed=seed, device=device,
                         init_from=init_from or "")
    metrics = train(store, out, config, resume=resume, force=force)
    if "test_accuracy" in metrics:
        print(f"test accuracy {100 * metrics['test_accuracy']:.1f}% on {metrics['test_fields']} fields; wrote {out}")
    elif "test_miou" in metrics:
        print(f"test mIoU {metrics['test_miou']:.3f}, pixel accuracy {100 * metrics['test_pixel_accuracy']:.1f}% "
              f"on {metrics['test_fields']} fields; wrote {out}")


@app.command("eval")
def eval_command(
    run: Path = typer.Argument(..., help="A run folder written by train."),
    stores: Optional[List[Path]] = typer.Argument(None, help="FieldStores to test on: one, or several of the same "
                                                             "signals fitted as other fields (a row block each); an "
                                                             "SDF run needs none: its scenes, or the store it trained "
                                                             "on, are recorded."),
    points: str = typer.Option("grid,qmc,rqmc,random,shrunk", help="Test point sets, comma-separated."),
    resolutions: Optional[str] = typer.Option(None, help="Grid sides, comma-separated (each set gets side^d points); "
                                                        "default: the training resolution."),
    out: Optional[Path] = typer.Option(None, help="Where to write eval.csv, eval.json and eval.png (default RUN)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    draws: int = typer.Option(5, help="Draws of each randomized point set (rqmc, random, shrunk) whose scores are "
                                      "averaged."),
) -> None:
    """Accuracy (mIoU for segmenters, SDF error for train-sdf runs) of RUN for every store, test point set and
    resolution, each cell's drop from the training cell, and the invariance gaps across point sets and across
    resolutions: a table, eval.csv, eval.json and eval.png."""
    from fieldlab._errors import UserError
    from fieldlab.learn.evaluate import (evaluate_table, format_summary, format_table, legend, summarize, write_csv,
                                         write_json, write_plot)

    kinds = [k for k in points.replace(" ", ",").split(",") if k]
    if not kinds:
        raise UserError("--points names no point set; give some of grid,qmc,rqmc,random,shrunk")
    try:
        sides = [int(s) for s in (resolutions or "").replace(" ", ",").split(",") if s]
    except ValueError:
        raise UserError(f"--resolutions takes grid sides like 8,16,32, got {resolutions!r}") from None
    rows, cell = evaluate_table(run, stores or None, points=kinds, resolutions=sides, device=device, draws=draws,
                                progress=True)
    summary = summarize(rows, cell)
    print(legend(rows, cell))
    print(format_table(rows, cell))
    print(format_summary(rows, cell, summary))
    folder = out or run
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(rows, folder / "eval.csv")
    write_json(rows, summary, folder / "eval.json")
    plotted = write_plot(rows, cell, summary, folder / "eval.png")
    print(f"wrote {folder / 'eval.csv'}, {folder / 'eval.json'}" +
          (f" and {folder / 'eval.png'}" if plotted else " (install matplotlib for eval.png)"))


@app.command("train-sdf", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train_sdf_command(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Run folder to write (net.safetensors, run.json)."),
    scenes: Optional[int] = typer.Option(None, help="Random 3-D ball scenes, every 5th held out (default 200)."),
    store: Optional[Path] = typer.Option(None, help="Read the input from the fitted fields of this store "
                                                    "(fit-dataset sample:balls: 2-D scenes) instead of the exact field."),
    points: str = typer.Option("rqmc", help="Input point set: grid, qmc, rqmc (redrawn each step), random, shrunk, mixed."),
    mix: str = typer.Option("grid,qmc,shrunk", help="With --points mixed: the point sets to draw from, one per step."),
    num_points: Optional[int] = typer.Option(None, help="Input points per scene per step (default 512)."),
    num_queries: Optional[int] = typer.Option(None, help="SDF query points per scene per step, uniform random (default 512)."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (default 300)."),
    batch_size: Optional[int] = typer.Option(None, help="Scenes per step (default 16)."),
    lr: Optional[float] = typer.Option(None, help="Peak AdamW learning rate (default 1e-2)."),
    seed: int = typer.Option(0, help="Random seed (scenes and training)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    max_seconds: float = typer.Option(0.0, help="Stop training after this many seconds; 0: no time limit."),
    force: bool = typer.Option(False, help="Replace a non-empty RUN."),
) -> None:
    """DI-Net's SDF task: ball-scene occupancy field in (exact, or fitted fields with --store), SDF out at
    arbitrary query points; prints the held-out mean absolute SDF error beside a constant baseline.
    `fieldlab eval RUN` then tabulates the error per test point set and resolution. Network options
    follow as --name VALUE."""
    from fieldlab.learn.sdf import SDFConfig, train_sdf
    from fieldlab.store.field_dir import check_out_dir

    check_out_dir(out, force, inputs=[store])
    given = {"scenes": scenes, "num_points": num_points, "num_queries": num_queries, "steps": steps,
             "batch_size": batch_size, "lr": lr}
    config = SDFConfig(store=None if store is None else str(store), points=points, mix=mix, seed=seed,
                       device=device, max_seconds=max_seconds, net_options=parse_extra(ctx.args),
                       **{k: v for k, v in given.items() if v is not None})
    config.validate()  # before anything is written
    metrics = train_sdf(config, out)
    print(f"test SDF mean absolute error {metrics['test_mae']:.4f} on {metrics['test_scenes']} scenes "
          f"(constant baseline {metrics['baseline_mae']:.4f}); wrote {out}")
