"""The `fieldlab` command: a thin layer over the library's configs and jobs."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import os
import signal
import sys
import threading
import typing
from pathlib import Path
from typing import Any, Optional

import typer

from fieldlab._errors import UserError
from fieldlab._validate import LIMITS, check_shape
from fieldlab.cli import _command_modules
from fieldlab.cli._dataclass_options import config_command, options_of, resolved, write_resolved
from fieldlab.edit.options import RenderConfig
from fieldlab.cli._options import join_multi_values, parse_extra, parse_size

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="fieldlab: neural fields as data. Fit signals as fields, render and inspect them.")


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fieldlab")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from fieldlab import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        print(f"fieldlab {_package_version()}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print fieldlab's version and exit.")) -> None:
    pass


@app.command("fields")
def fields_command(name: Optional[str] = typer.Argument(None, help="Show the options of this field.")) -> None:
    """List the registered field architectures, or one field's options."""
    from fieldlab.fields import get_config_class, list_fields
    from fieldlab.fields import option_docs
    from fieldlab.fit.own_engines import engine_options

    if name is None:
        width = max(map(len, list_fields()))
        for field_name in list_fields():
            cls = get_config_class(field_name)
            summary = (cls.__doc__ or "").strip().splitlines()[0]
            print(f"{field_name:<{width}} {cls().num_params():>9,} params by default  {summary}")
        return
    cls = get_config_class(name)
    docs = option_docs(cls)
    print(f"{cls.name}: {(cls.__doc__ or '').strip().splitlines()[0]}  (lr {cls.lr:g}; --params sizes --{cls.size_knob.replace('_', '-')})")
    for f in dataclasses.fields(cls):
        if f.name in ("in_dim", "out_dim"):
            continue
        print(f"  --{f.name.replace('_', '-'):<20} {str(f.default):<10} {docs.get(f.name, '')}")
    train = engine_options(cls)
    if train is not None:  # its own engine's options are fit flags too
        print(f"training ({train.__name__}):")
        docs = option_docs(train)
        for f in dataclasses.fields(train):
            print(f"  --{f.name.replace('_', '-'):<20} {str(f.default):<10} {docs.get(f.name, '')}")


FIT_HELP = ("Fit a field to INPUT (a file or sample:NAME) and write the field DIR. Field options follow as "
            "--name VALUE (see `fieldlab fields NAME`).")


def _fit_options():
    """FitJob's and FitConfig's options, then those of a mesh input (OccupancyConfig) and of MINER's engine
    (MinerTrainConfig): the last two take text that their configs check with their own messages, as when
    they were free --name VALUE options."""
    from fieldlab.fit import FitConfig
    from fieldlab.fit.job import FitJob
    from fieldlab.fit.miner import MinerTrainConfig
    from fieldlab.fit.occupancy import OccupancyConfig

    text = [dataclasses.replace(o, as_text=True, help=f"{o.help} ({what})") for cls, what in
            ((OccupancyConfig, "meshes"), (MinerTrainConfig, "miner")) for o in options_of(cls)]
    return options_of(FitJob, only=("field", "max_size", "max_frames", "modality", "span", "params")) + \
        options_of(FitConfig) + text


@app.command("fit", help=FIT_HELP, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@config_command(_fit_options(), positional={"input": "INPUT"}, extras=True)
def fit_command(
    ctx: typer.Context,
    input: Optional[str] = typer.Argument(None, help="Signal file or sample:NAME (sample:camera, …)."),
    out: Path = typer.Option(..., "--out", help="Field DIR to write."),
    tensorboard: bool = typer.Option(False, help="Also log to DIR/tensorboard (needs fieldlab[tensorboard])."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    force: bool = typer.Option(False, help="Replace a non-empty --out."),
    resume: bool = typer.Option(False, help="Continue an interrupted fit from the checkpoint it keeps beside --out "
                                            "(saved every minute of fitting, and at each of MINER's scales; a "
                                            "single field's fused kernel keeps none)."),
    options: dict = None,
) -> None:
    from fieldlab.fields import coerce_option
    from fieldlab.fit import FitConfig
    from fieldlab.fit.job import FitJob, run_fit_job
    from fieldlab.fit.occupancy import OccupancyConfig

    options = {**options, **parse_extra(ctx.args)}  # free names (field and mesh options) never match a flag
    if not options.get("input"):
        raise UserError("fit needs an INPUT (a file or sample:NAME)")
    fit_names = {f.name for f in dataclasses.fields(FitConfig)}
    fit_options = {k: options.pop(k) for k in list(options) if k in fit_names}
    mesh_names = {f.name for f in dataclasses.fields(OccupancyConfig)}
    mesh_hints = typing.get_type_hints(OccupancyConfig)  # typed, so config.json holds numbers, not text
    mesh_options = {k: coerce_option(k, options.pop(k), mesh_hints[k]) for k in list(options) if k in mesh_names}
    hints = typing.get_type_hints(FitConfig)
    fit_config = FitConfig(**{k: coerce_option(k, v, hints[k]) for k, v in fit_options.items()})
    job = FitJob(input=str(options.pop("input")), field=str(options.pop("field", "siren")),
                 max_size=_int_or_none(options.pop("max_size", None), "--max-size", LIMITS.width),
                 max_frames=_int_or_none(options.pop("max_frames", None), "--max-frames", LIMITS.samples),
                 modality=options.pop("modality", None), span=options.pop("span", None),
                 params=_int_or_none(options.pop("params", None), "--params", LIMITS.params),
                 fit=fit_config, field_options=options, mesh_options=mesh_options)
    result = run_fit_job(job, out, force=force, progress=not quiet, tensorboard=tensorboard, resume=resume)
    m = result.metrics
    quality = ", ".join(f"{label} {m[k]:.4g}{' dB' if 'nr' in k else ''}"
                        for k, label in QUALITY.items() if m.get(k) is not None and math.isfinite(m[k]))
    print(f"{job.field} ({m['params']:,} params): {quality} after {m['steps']} steps "
          f"in {m['seconds']:.1f} s on {m['device']} -> {out}")


QUALITY = {"psnr": "PSNR", "ssim": "SSIM", "snr": "SNR", "psnr_frame_mean": "mean frame PSNR",
           "psnr_frame_min": "worst frame PSNR", "iou": "IoU", "chamfer": "Chamfer"}
"""The measures a fit's line gives, as it names them."""


def _int_or_none(value: Any, flag: str, most: int) -> int | None:
    """A positive whole number of at most `most` (checked, never allocated), or None when not given."""
    from fieldlab._validate import bounded_int

    return None if value is None else bounded_int(value, flag, 1, most)


@app.command("render")
@config_command(options_of(RenderConfig), positional={"dir": "DIR"})
def render_command(
    dir: Path = typer.Argument(..., help="Field DIR."),
    out: Path = typer.Option(..., "--out", help="Output file; its suffix picks the format (.png, .wav, .mp4, .npy, …)."),
    force: bool = typer.Option(False, help="Overwrite an existing --out."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    options: dict = None,
) -> None:
    """Render a field at any resolution over any sub-region of its domain."""
    from fieldlab.edit import frame_info, parse_region, render, render_grid, rendered_info
    from fieldlab.fit import resolve_device
    from fieldlab.signals import check_output, get_modality, write_signal
    from fieldlab.store import load_field

    from fieldlab._safety import check_output_file

    config = RenderConfig(**{k: v for k, v in options.items() if k != "dir"})
    dir, size, region = options["dir"], config.size, config.region
    target = resolve_device(config.device)
    stored = load_field(dir, device=target)
    # a video field rendered to an image file: one frame (the region's time axis one frame long)
    frame = stored.signal.kind == "video" and out.suffix.lower() in get_modality("image").output_suffixes
    if get_modality(stored.signal.kind).occupancy:  # rendered as its surface, the field's zero level set
        from fieldlab.signals.mesh_export import render_mesh, write_mesh

        cube = parse_size(size)
        cube = list(check_shape(cube * 3 if len(cube) == 1 else cube, "--size")) if cube else None
        bounds = parse_region(region, 3) if region else None
        check_output_file(out, force=force, inputs=[dir])  # once the request is known to be good
        check_output(out, stored.signal)
        vertices, faces = render_mesh(stored, size=cube, region=bounds, device=target, progress=not quiet)
        write_mesh(out, vertices, faces)
        _write_render_config(out, options)
        from fieldlab.plots import write_mesh_preview

        write_mesh_preview(vertices, faces, out.with_name(out.name + ".preview.png"), title=f"{len(faces):,} faces of {out.name}")
        print(f"rendered the surface at {'x'.join(map(str, cube or stored.signal.shape))}: {len(faces):,} faces -> {out}")
        return
    grid = render_grid(stored, size=parse_size(size), region=parse_region(region, stored.signal.in_dim) if region else None)
    if frame and grid[0][0] != 1:
        first, rest = grid[1][0][0], ",".join(f"{lo:g}:{hi:g}" for lo, hi in grid[1][1:])
        raise UserError(f"--out {out}: an image holds one frame of this video; give one frame's time range, e.g. "
                        f"--region {first:g}:{first + 1:g},{rest}, or a video suffix "
                        f"({', '.join(get_modality('video').output_suffixes)})")
    check_output_file(out, force=force, inputs=[dir])  # once the request is known to be good (and to fit in memory)
    if not frame:
        check_output(out, stored.signal)
    values = render(stored, size=grid[0], region=grid[1], device=target, progress=not quiet)
    info = rendered_info(stored.signal, grid[0], grid[1])
    if frame:
        values, info = values[0], frame_info(info, grid[0])
    write_signal(out, stored.signal.normalization.decode(values), info)
    _write_render_config(out, options)
    print(f"rendered {'x'.join(map(str, grid[0]))} over {','.join(f'{lo:g}:{hi:g}' for lo, hi in grid[1])} -> {out}")


def _write_render_config(out: Path, options: dict) -> None:
    """OUT.config.json beside the rendered file: `render --config` reads it back to render again."""
    fixed = {"dir": str(options["dir"])}
    write_resolved(out.with_name(out.name + ".config.json"), resolved(options, render_command.generated, **fixed))


@app.command("info")
def info_command(
    dir: Path = typer.Argument(..., help="Field DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Architecture, parameters, signal and metrics of a field DIR."""
    from fieldlab.store import load_field

    stored = load_field(dir)
    params = sum(p.numel() for p in stored.module.parameters())
    description = {"field": stored.config.name, "params": params, "config": stored.config.to_dict(),
                   "signal": stored.signal.to_dict(), "metrics": stored.metrics}
    if as_json:
        print(json.dumps(description, indent=2))
        return
    s = stored.signal
    print(f"field     {stored.config.name} ({params:,} parameters)")
    print("config    " + ", ".join(f"{k}={v}" for k, v in stored.config.to_dict().items()))
    print(f"signal    {s.kind} {'x'.join(map(str, s.shape))}x{s.channels} {s.normalization.dtype} from {s.source}")
    print("metrics   " + ", ".join(f"{k}={v}" for k, v in stored.metrics.items()))
    for line in getattr(stored.module, "describe", lambda: [])():  # a field's own summary (MINER's blocks)
        print(line)



# What an interrupt leaves behind, for the commands that keep finished work.
RESUMABLE = {
    "fit": "a fit saves a checkpoint beside --out after every minute of fitting (none before the first; a single "
           "field's fused kernel keeps none): run the same command with --resume to go on from the last",
    "fit-dataset": "the chunks finished so far are kept (meta-learning, for functa fields, saves a checkpoint beside "
                   "--out after every minute): run the same command with --resume to go on from there",
    "train": "a run saves a checkpoint every --checkpoint-every steps (none before the first): run the same "
             "command with --resume to go on from the last",
    "extend": "an extend saves a checkpoint beside --out after every minute of fitting (none before the first): run "
              "the same command with --resume to go on from the last",
    "train-sdf": "the last minute's checkpoint is kept in RUN: run the same command with --resume to go on",
}


@app.command("version")
def version_command() -> None:
    """Print fieldlab's version."""
    print(f"fieldlab {_package_version()}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2; an interrupt exits 130 (SIGINT) or 143 (SIGTERM)."""
    _freeze_imports()
    whole_process = argv is None  # the program itself (console script, python -m fieldlab), not a caller's call
    argv = join_multi_values(list(sys.argv[1:] if argv is None else argv))
    _command_modules.register(argv, app)  # the module of the command asked for (every module for help)
    _log_notes_to_stderr()
    from fieldlab._deadline import IMPORTED, command_started

    # --max-seconds counts from here, or, for the program itself, from its imports' start (seconds of torch)
    with _sigterm_as_interrupt() as received, command_started(IMPORTED if whole_process else None):
        _run(argv, received)
    if whole_process and argv and argv[0] in QUICK_EXIT:
        _exit_now()


# Commands whose process ends without tearing down its ~2,000 modules (0.4 s, 0.7 s once torch._dynamo is
# imported, of a small fit's wall time on a CPU; fit-dataset of 32 digits: 2.9 s against 3.2): their files are
# closed and renamed in place by then (a store's writer and reader threads are joined before the command returns).
QUICK_EXIT = {"fit", "fit-dataset"}


def _exit_now() -> None:
    """Exit 0 as the interpreter would (exit handlers run, output flushed) but skip its teardown; a command
    that left a thread running exits the usual way, which waits for it."""
    import atexit

    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()  # logging's shutdown, temporary folders' finalizers, …
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _freeze_imports() -> None:
    """Once a process: the objects alive now (the imported modules', ~170k) leave the cyclic garbage
    collector's view, which every full collection during a command walked again (0.2 of a small CPU fit's
    1.7 CPU seconds; BENCHMARKS.md, "Refactor speed, re-run"). They live as long as the process anyway."""
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True


_frozen = False


def _run(argv: list[str], received: list[int]) -> None:
    try:
        result = app(args=argv, prog_name="fieldlab", standalone_mode=False)
    except UserError as error:
        _fail(str(error), 2)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted(argv, received)
    except typer.Exit as error:
        sys.exit(error.exit_code)
    except Exception as error:
        # Usage errors come from click (vendored inside newer typer): matched by their shape, not class.
        if hasattr(error, "format_message") and getattr(error, "exit_code", None) == 2:
            message = error.format_message()
            _fail(message, 2) if message else sys.exit(2)  # no message: help was already shown
        raise
    if result == 130:  # typer turns an interrupt into this exit code, returned outside standalone mode
        _interrupted(argv, received)
    if isinstance(result, int) and result:  # click returns an exit code for --help and the like
        sys.exit(result)


def _log_notes_to_stderr() -> None:
    import logging

    class StderrHandler(logging.StreamHandler):
        """Writes to the sys.stderr of the moment, not the one of the first command: a later command run in
        the same process with stderr redirected (an embedding program, pytest's capture) gets its notes
        instead of a logging error about a closed stream."""

        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, value):
            pass

    logger = logging.getLogger("fieldlab")
    if not logger.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("fieldlab: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (from `timeout`, schedulers, container stops) takes SIGINT's path: temporary folders removed,
    checkpoints kept, one line. Yields a list that holds the signal's number once one arrived."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return

    def interrupt(number, frame):
        if _importing(frame):  # raised inside an import, it would leave a half-made module (torch imports
            # lazily, mid-fit) and come out as another error; deliver it again once the import is done
            threading.Timer(0.05, os.kill, (os.getpid(), number)).start()
            return
        received.append(number)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _importing(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _interrupted(argv: list[str], received: list[int] = ()) -> None:
    command = next((a for a in argv if not a.startswith("-")), "")
    status = 128 + received[0] if received else 130  # the shell's convention: 128 + the signal's number
    _fail("interrupted; " + RESUMABLE.get(command, "nothing was written"), status)


def _fail(message: str, status: int) -> None:
    print(f"fieldlab: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(status)
