"""Issue 21's speed check: every training path of the code before the engine refactor (91de15a) against
this checkout, in the same run, on the CPU.

    python3 benchmarks/refactor_speed.py                  # a few minutes on a loaded 2-core CPU
    python3 benchmarks/refactor_speed.py --repeats 5 --only fit,fit-minibatch

The old sources come from `git archive OLD src` into a temporary folder (and the new ones too with
`--new COMMIT`, so that others' uncommitted edits stay out); each run is one subprocess with
PYTHONPATH on the old or the new `src`, so both import their own fieldlab (the editable install is
shadowed). A run times only `fieldlab.cli.main.main(argv)` (not Python's and torch's start-up), with its
output thrown away. Each version builds its own inputs first (a store of fitted digits for `train`, a
Local-Global field for `extend`), untimed. Runs are interleaved (path by path, old and new alternating in
order each repeat) and the minimum of the repeats is kept: the least disturbed run of a shared machine.
Printed: the load (uptime) before and after, and a markdown table of each path's old and new seconds, wall
and CPU (the process's, every thread's: on a loaded machine the wall clock also counts the time other jobs
held the cores), and their ratios new/old (the issue's target: none above 1.05).

Sizes are tiny on purpose: this checks that the refactor added no overhead per step, not how fast a
real fit is. Paths whose defaults changed between the two commits for other reasons (issue 20's dataset
bandwidths) run the same command, so a ratio includes those changes too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNER = """
import json, sys, time
import torch
from fieldlab.cli.main import main
argv = json.loads(sys.argv[1])
if int(sys.argv[4]):  # no matplotlib: the pictures are skipped, as where it is not installed
    sys.modules["matplotlib"] = None
if int(sys.argv[3]):
    torch.set_num_threads(int(sys.argv[3]))
start, cpu = time.perf_counter(), time.process_time()
try:
    main(argv)
except SystemExit as e:
    if e.code not in (0, None):
        raise
open(sys.argv[2], "w").write(f"{time.perf_counter() - start} {time.process_time() - cpu}")
"""
IMAGE = ["sample:camera", "--max-size", "64"]
DIGITS = ["sample:digits", "--limit", "64"]
SETUP = {
    "store": ["fit-dataset", *DIGITS, "--field", "siren", "--steps", "10", "--test-fraction", "0.25", "--quiet",
              "--out", "{work}/store"],
    # Widths given: since issue 22 an unsized Local-Global field solves its widths for the default budget
    # at any --partitions, which would compare two different fields.
    "lg": ["fit", "sample:camera", "--max-size", "32", "--field", "local-global", "--partitions", "2,2",
           "--hidden-dim", "14", "--global-dim", "84", "--steps", "10", "--quiet", "--out", "{work}/lg"],
}
PATHS = {
    "fit": ["fit", *IMAGE, "--field", "siren", "--hidden-dim", "32", "--steps", "200", "--quiet", "--out", "{out}"],
    "fit-minibatch": ["fit", *IMAGE, "--field", "siren", "--hidden-dim", "32", "--steps", "200", "--batch-size",
                      "512", "--quiet", "--out", "{out}"],
    "fit-dataset": ["fit-dataset", *DIGITS, "--field", "siren", "--steps", "50", "--kernel", "reference",
                    "--quiet", "--out", "{out}"],
    "functa": ["fit-dataset", *DIGITS, "--field", "functa", "--meta-steps", "10", "--meta-batch-size", "16",
               "--inner-steps", "2", "--quiet", "--out", "{out}"],
    "miner": ["fit", *IMAGE, "--field", "miner", "--steps", "50", "--quiet", "--out", "{out}"],
    "fit-lg": ["fit", "sample:camera", "--max-size", "40", "--field", "local-global", "--partitions", "2,2",
               "--hidden-dim", "14", "--global-dim", "84", "--steps", "50", "--quiet", "--out", "{out}"],
    "extend": ["extend", "{work}/lg", "sample:camera", "--max-size", "40", "--steps", "10", "--out", "{out}"],
    "train-dinet": ["train", "{work}/store", "--net", "dinet", "--steps", "5", "--batch-size", "16", "--out", "{out}"],
    "train-cnn4": ["train", "{work}/store", "--net", "cnn4", "--points", "grid", "--steps", "5", "--batch-size", "16",
                   "--out", "{out}"],
    "train-sdf": ["train-sdf", "--scenes", "20", "--steps", "5", "--batch-size", "4", "--num-points", "128",
                  "--num-queries", "128", "--out", "{out}"],
}


def sources(commit: str, into: Path) -> Path:
    """`src/` of `commit`, unpacked under `into/commit`."""
    archive = into / f"{commit}.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), commit, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / commit, filter="data")
    return into / commit / "src"


def run(src: Path, argv: list[str], work: Path, out: Path, threads: int = 0,
        pictures: bool = True) -> tuple[float, float, float | None]:
    """Seconds `main(argv)` took with fieldlab imported from `src`, the CPU seconds of its process in them
    (every thread's; what other jobs on a loaded machine disturb least), and the training seconds the command
    wrote in OUT/metrics.json (`seconds`: the steps alone, without reading, evaluation, writing or the
    pictures the new code draws), where it writes one."""
    argv = [a.format(work=work, out=out) for a in argv]
    clock = out.with_suffix(".seconds")
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(argv), str(clock), str(threads),
                           str(int(not pictures))], env=env, cwd=work,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with {src}:\n{done.stderr[-2000:]}")
    metrics = out / "metrics.json"
    steps = json.loads(metrics.read_text()).get("seconds") if metrics.is_file() else None
    wall, cpu = map(float, clock.read_text().split())
    return wall, cpu, steps


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="91de15a", help="the commit before the refactor")
    parser.add_argument("--new", default="",
                        help="a commit to compare (default: this working tree's src, uncommitted edits included; "
                             "name one where others edit the tree meanwhile)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated paths (default: all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch's CPU threads per run (0: torch's default; on a shared 2-core machine two "
                             "threads of one run fight the other jobs and a step's time varies 20-fold)")
    parser.add_argument("--no-pictures", action="store_true",
                        help="hide matplotlib from both versions, so the new code skips the pictures the old one "
                             "did not draw (training.png, error.png, blocks.png): the steps and the bookkeeping alone")
    args = parser.parse_args()
    paths = {k: v for k, v in PATHS.items() if not args.only or k in args.only.split(",")}
    with tempfile.TemporaryDirectory(prefix="refactor_speed.") as tmp:
        tmp = Path(tmp)
        versions = {"old": sources(args.old, tmp), "new": sources(args.new, tmp) if args.new else REPO / "src"}
        works = {name: tmp / f"work-{name}" for name in versions}
        for name, src in versions.items():
            works[name].mkdir()
            for key, argv in SETUP.items():
                run(src, argv, works[name], works[name] / f"setup-{key}")[0]
        print(f"load before: {uptime()}", flush=True)
        times: dict[tuple[str, str], list[float]] = {}
        cpus: dict[tuple[str, str], list[float]] = {}
        steps: dict[tuple[str, str], list[float]] = {}
        for repeat in range(args.repeats):
            for i, (path, argv) in enumerate(paths.items()):
                order = ["old", "new"] if (repeat + i) % 2 == 0 else ["new", "old"]
                for name in order:
                    out = works[name] / f"{path}-{repeat}"
                    total, cpu, trained = run(versions[name], argv, works[name], out, args.threads,
                                              pictures=not args.no_pictures)
                    times.setdefault((path, name), []).append(total)
                    cpus.setdefault((path, name), []).append(cpu)
                    if trained is not None:
                        steps.setdefault((path, name), []).append(trained)
                print(f"repeat {repeat + 1}/{args.repeats} {path}: old {times[path, 'old'][-1]:.2f} s "
                      f"(CPU {cpus[path, 'old'][-1]:.2f} s), new {times[path, 'new'][-1]:.2f} s "
                      f"(CPU {cpus[path, 'new'][-1]:.2f} s)", flush=True)
        print(f"load after: {uptime()}\n")
    print(f"old {args.old}, new {args.new or 'working tree'}{', no pictures' if args.no_pictures else ''}; "
          f"min of {args.repeats} runs, seconds in main(); "
          f"{time.strftime('%Y-%m-%d')}, CPU "
          f"({os.cpu_count()} cores), torch threads {args.threads or 'default'}\n")
    print("| path | command | old s | new s | new/old | CPU old s | CPU new s | CPU new/old | steps old s | "
          "steps new s | steps new/old |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for path, argv in paths.items():
        old, new = min(times[path, "old"]), min(times[path, "new"])
        cpu_old, cpu_new = min(cpus[path, "old"]), min(cpus[path, "new"])
        command = " ".join(argv).replace("{work}/", "").replace(" --out {out}", "")
        row = (f"| {path} | `{command}` | {old:.2f} | {new:.2f} | {new / old:.3f} | {cpu_old:.2f} | {cpu_new:.2f} | "
               f"{cpu_new / cpu_old:.3f} |")
        if steps.get((path, "old")) and steps.get((path, "new")):
            a, b = min(steps[path, "old"]), min(steps[path, "new"])
            row += f" {a:.2f} | {b:.2f} | {b / a:.3f} |"
        else:
            row += " – | – | – |"
        print(row)


if __name__ == "__main__":
    main()
