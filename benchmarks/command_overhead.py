"""Issue 25: where the wall time of one `fieldlab fit` command goes besides fitting.

    python3 benchmarks/command_overhead.py                                   # astronaut, hashgrid and siren, 5 steps
    python3 benchmarks/command_overhead.py --fields hashgrid --repeats 3 -- --target-psnr 40 --steps 2000
    python3 benchmarks/command_overhead.py --device cuda --repeats 3        # the same on a GPU
    git archive HEAD~3 src | tar -x -C /tmp/old                             # before/after, interleaved:
    python3 benchmarks/command_overhead.py --src old=/tmp/old/src,new=src

Each run is one subprocess, `python -X importtime THIS --child -- fit INPUT --field F ...` (the command as
`python -m fieldlab fit ...` runs it, through `fieldlab.cli.main.main`), with timers wrapped around the
job's steps (signal read, field build and Adam, the steps, the final evaluation, metrics, each file and
picture) and the launch time passed in, so the phases add up to the process's wall time:

    start-up   launch → main() called: the interpreter and every import made before the command runs
    cli        main() → run_fit_job: option parsing, configs, the time limit
    checks     run_fit_job → the signal is read: out DIR, options, kind
    read       load_signal
    prepare    read → fit(): the field's config, memory check, the out DIR opened
    build      fit() → the first step: seed, the field, Adam (its first use imports torch._dynamo)
    steps      the steps and their log (metrics.json's `seconds` is fitting time: steps minus nothing)
    final eval the whole signal predicted once after the last step
    metrics    PSNR/SSIM of that prediction
    field, reconstruction, config, error.png, training.png: each file written
    finish     the last file → main() returns (the DIR moved in place, the summary line)
    exit       main() returns → the process has ended (interpreter shutdown, threads joined)
    after metrics  metrics → main() returns: every file and picture in one span (what an overlap of the
               writes, whose own rows would then overlap, is measured by)

Reported per field: the median over --repeats of each phase (ms), the wall time, metrics.json's fitting
`seconds`, and wall minus fitting (the overhead this benchmark exists for); and, from -X importtime, the
slowest top-level imports of the last run (cumulative ms; lazy ones such as torch._dynamo count inside
their phase too). Runs are interleaved (field by field in each repeat). Extra arguments after `--` go to
`fieldlab fit`. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bytecode import use_bytecode

ENV_LAUNCH, ENV_OUT = "FIELDLAB_OVERHEAD_LAUNCH", "FIELDLAB_OVERHEAD_OUT"
PHASES = ("start-up", "cli", "checks", "read", "prepare", "build", "steps", "final eval", "metrics", "field",
          "reconstruction", "config", "error.png", "training.png", "finish", "exit", "after metrics")


# -- the child: the command with timestamps ---------------------------------------------------------------
def _child(argv: list[str]) -> None:
    marks: list[tuple[str, float]] = [("launch", float(os.environ[ENV_LAUNCH]))]
    import importlib

    from fieldlab.cli.main import main

    # by module name: `fieldlab.fit` the attribute is the function `fit`, not the package
    job, loop, plots = (importlib.import_module(f"fieldlab.{m}") for m in ("fit.job", "fit.loop", "plots"))

    marks.append(("main", time.time()))  # the imports above are the command's own (cli.main imports fit.job)

    def timed(module, name: str, begin: str | None, end: str | None) -> None:
        inner = getattr(module, name, None)
        if inner is None:  # a tree of another version (--src) that names it differently
            return

        def wrapper(*args, **kwargs):
            if begin:
                marks.append((begin, time.time()))
            try:
                return inner(*args, **kwargs)
            finally:
                if end:
                    marks.append((end, time.time()))

        setattr(module, name, wrapper)

    timed(job, "_run_fit_job", "run", None)
    timed(job, "load_signal", "read", "read end")
    timed(job, "fit", "fit", None)
    timed(loop.Fitter, "step", "step", None)
    timed(loop.Fitter, "predict", "predict", "predict end")
    timed(loop, "metrics_for", "metrics", "metrics end")
    timed(job, "write_field", "field", "field end")
    timed(job, "write_reconstruction", "reconstruction", "reconstruction end")
    timed(job, "_write_run_files", "config", "config end")
    timed(plots, "write_error_map", "error.png", "error.png end")
    timed(plots, "write_training_plot", "training.png", "training.png end")
    def dump() -> None:  # at exit: the command may end its process itself once its files are written
        marks.append(("returned", time.time()))
        Path(os.environ[ENV_OUT]).write_text(json.dumps(marks))

    atexit.register(dump)
    sys.argv = ["fieldlab", *argv]
    main()  # as the console script calls it


def _phases(marks: list[tuple[str, float]], ended: float) -> dict[str, float]:
    """Seconds of each phase from the child's marks (first of a name, except the final evaluation: the last
    predict, as a --target-psnr check predicts during the steps too)."""
    first: dict[str, float] = {}
    for name, t in marks:
        first.setdefault(name, t)
    last_predict = max((i for i, (n, _) in enumerate(marks) if n == "predict"), default=None)
    at = dict(first)
    if last_predict is not None:
        at["predict"], at["predict end"] = marks[last_predict][1], marks[last_predict + 1][1]
    at["ended"] = ended
    edges = {"start-up": ("launch", "main"), "cli": ("main", "run"), "checks": ("run", "read"),
             "read": ("read", "read end"), "prepare": ("read end", "fit"), "build": ("fit", "step"),
             "steps": ("step", "predict"), "final eval": ("predict", "predict end"),
             "metrics": ("metrics", "metrics end"), "field": ("field", "field end"),
             "reconstruction": ("reconstruction", "reconstruction end"), "config": ("config", "config end"),
             "error.png": ("error.png", "error.png end"), "training.png": ("training.png", "training.png end"),
             "finish": ("training.png end", "returned"), "exit": ("returned", "ended"),
             "after metrics": ("metrics end", "returned")}
    return {phase: at[b] - at[a] for phase, (a, b) in edges.items() if a in at and b in at}


def _imports(stderr: str, top: int) -> list[tuple[str, float]]:
    """The slowest top-level imports (cumulative ms) in -X importtime's lines."""
    found = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        if name.strip() and not name.startswith("  ") and cumulative.strip().isdigit():
            found.append((name.strip(), int(cumulative) / 1000))
    return sorted(found, key=lambda x: -x[1])[:top]


def run_once(input: str, field: str, extra: list[str], folder: Path, python: str, src: str | None = None) -> dict:
    out, marks = folder / f"{field}-out", folder / f"{field}-marks.json"
    argv = ["fit", input, "--field", field, "--out", str(out), "--quiet", "--force", *extra]
    env = {**os.environ, ENV_LAUNCH: repr(time.time()), ENV_OUT: str(marks)}
    if src:  # another checkout's src shadows the installed fieldlab
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run([python, "-X", "importtime", __file__, "--child", "--", *argv], env=env,
                          capture_output=True, text=True)
    ended = time.time()
    if proc.returncode != 0:
        sys.exit(f"{field}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    launched = float(env[ENV_LAUNCH])
    metrics = json.loads((out / "metrics.json").read_text())
    phases = _phases(json.loads(marks.read_text()), ended)
    return {"phases": phases, "wall": ended - launched, "fit": metrics["seconds"], "psnr": metrics.get("psnr"),
            "steps": metrics["steps"], "imports": _imports(proc.stderr, 12)}


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default="sample:astronaut")
    parser.add_argument("--fields", default="hashgrid,siren")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default=None, help="fieldlab fit's --device (default: its own choice)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write every run's numbers here")
    parser.add_argument("--src", default=None,
                        help="LABEL=SRC,LABEL=SRC: run each field with each of these fieldlab sources "
                             "(e.g. old=/tmp/old/src,new=src), interleaved, as columns FIELD/LABEL")
    parser.add_argument("--bytecode", type=Path, default=None,
                        help="compile every imported package's bytecode into this folder first and run the "
                             "commands with it, as an installed environment has it (benchmarks/bytecode.py)")
    args, extra = parser.parse_known_args()
    if args.bytecode:
        print(f"bytecode compiled in {use_bytecode(args.bytecode):.1f} s")
    extra = [a for a in extra if a != "--"]
    if "--steps" not in extra:
        extra += ["--steps", str(args.steps)]
    if args.device:
        extra += ["--device", args.device]
    sources = dict(s.split("=", 1) for s in args.src.split(",")) if args.src else {"": None}
    columns = [(f, label) for f in args.fields.split(",") for label in sources]
    fields = [f"{f}/{label}" if label else f for f, label in columns]
    print(f"load before: {_load()}; fit {args.input} {' '.join(extra)}")
    runs: dict[str, list[dict]] = {f: [] for f in fields}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, (field, label) in zip(fields, columns):  # interleaved: a burst of load is shared by all
                src = sources[label] and str(Path(sources[label]).resolve())
                runs[name].append(run_once(args.input, field, extra, Path(tmp), sys.executable, src))
    print(f"load after: {_load()}")
    print("\n| phase (median ms) | " + " | ".join(fields) + " |\n|---|" + "---:|" * len(fields))
    for phase in PHASES:
        cells = [statistics.median(r["phases"].get(phase, 0.0) for r in runs[f]) * 1000 for f in fields]
        print(f"| {phase} | " + " | ".join(f"{c:,.0f}" for c in cells) + " |")
    for label, key in (("wall (s)", lambda r: r["wall"]), ("fitting, metrics.json (s)", lambda r: r["fit"]),
                       ("wall − fitting (s)", lambda r: r["wall"] - r["fit"])):
        print(f"| **{label}** | " + " | ".join(f"{statistics.median(map(key, runs[f])):.2f}" for f in fields) + " |")
    for field in fields:
        last = runs[field][-1]
        print(f"\n{field}: {last['steps']} steps, PSNR {last['psnr']}; slowest top-level imports (ms): "
              + ", ".join(f"{name} {ms:,.0f}" for name, ms in last["imports"]))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:])
    else:
        main()
