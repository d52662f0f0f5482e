"""Issue 25: where a command's wall time goes, from the interpreter's start to its exit, by sampling.

    python3 benchmarks/command_timeline.py -- fit-dataset patches.npz --out S --field siren --force --quiet
    python3 benchmarks/command_timeline.py --every 0.005 --windows 0.25 -- fit sample:astronaut --out A --force

The command runs as `python -m fieldlab ...` would, in a child process whose first act is to start a thread
that looks at the main thread's stack every `--every` seconds (`sys._current_frames`). Each sample is put
in one bucket: `import X` while the top-level module X is being imported (the outermost import in the
stack other than fieldlab's own, so that torch's import shows as torch's), else the innermost frame in
fieldlab's source (`file:function`), else the innermost frame at all. A sample stands for the time since
the one before it, so a call that holds the interpreter (and delays the sampler) is counted where it
ends, and a window of the timeline may show more than 100%. Samples are written straight to a file
descriptor, so a command that ends its process with `os._exit` loses none.

Printed: the child's wall time (from the shell), the buckets by total time, and a timeline in windows of
`--windows` seconds naming each window's largest bucket. The sampler costs a little: compare the wall
time with a run without it.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

from bytecode import use_bytecode

ENV_OUT, ENV_EVERY, ENV_START = "FIELDLAB_TIMELINE_OUT", "FIELDLAB_TIMELINE_EVERY", "FIELDLAB_TIMELINE_START"


def _bucket(frame) -> str:
    """The bucket of one stack (innermost frame first): see the module's docstring."""
    outer_import, fieldlab, innermost = None, None, None
    while frame is not None:
        code = frame.f_code
        if innermost is None:
            innermost = f"{Path(code.co_filename).name}:{code.co_name}"
        if code.co_name == "_find_and_load" and "importlib" in code.co_filename:
            name = str(frame.f_locals.get("name", "?")).split(".")[0]
            if outer_import is None or outer_import == "fieldlab" or name != "fieldlab":
                outer_import = name
        if fieldlab is None and f"fieldlab{os.sep}" in code.co_filename:
            parts = Path(code.co_filename).parts
            fieldlab = "/".join(parts[parts.index("fieldlab") + 1:]) + ":" + code.co_name
        frame = frame.f_back
    if outer_import is not None:
        return f"import {outer_import}"
    return fieldlab or innermost or "?"


def _child(argv: list[str]) -> None:
    import runpy
    import threading

    fd = os.open(os.environ[ENV_OUT], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    every = float(os.environ[ENV_EVERY])
    main_id = threading.get_ident()

    def sample() -> None:
        last = float(os.environ[ENV_START])
        while True:
            time.sleep(every)
            frame = sys._current_frames().get(main_id)
            now = time.time()
            if frame is None:
                return
            os.write(fd, f"{now:.6f}\t{now - last:.6f}\t{_bucket(frame)}\n".encode())
            last = now

    threading.Thread(target=sample, daemon=True, name="timeline").start()
    sys.argv = ["fieldlab", *argv]
    runpy.run_module("fieldlab", run_name="__main__", alter_sys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=0.01, help="seconds between samples")
    parser.add_argument("--windows", type=float, default=0.5, help="seconds per line of the timeline")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the fieldlab command")
    parser.add_argument("--bytecode", type=Path, default=None,
                        help="compile every imported package's bytecode into this folder first and run the "
                             "commands with it, as an installed environment has it (benchmarks/bytecode.py)")
    args = parser.parse_args()
    if args.bytecode and not args.child:
        print(f"bytecode compiled in {use_bytecode(args.bytecode):.1f} s", flush=True)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.child:
        _child(command)
        return
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"timeline_{os.getpid()}.tsv"
    start = time.time()
    env = dict(os.environ, **{ENV_OUT: str(out), ENV_EVERY: str(args.every), ENV_START: f"{start:.6f}"})
    code = subprocess.run([sys.executable, __file__, "--child", "--", *command], env=env).returncode
    wall = time.time() - start
    rows = [line.split("\t") for line in out.read_text().splitlines() if line.count("\t") == 2]
    totals: collections.Counter[str] = collections.Counter()
    windows: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for stamp, span, bucket in rows:
        totals[bucket] += float(span)
        windows[int((float(stamp) - start) // args.windows)][bucket] += float(span)
    sampled = sum(totals.values())
    print(f"exit {code}; wall {wall:.2f} s from the shell; sampled {sampled:.2f} s of the main thread "
          f"({len(rows)} samples); before the first sample {float(rows[0][0]) - start:.2f} s" if rows else
          f"exit {code}; wall {wall:.2f} s; no samples")
    print("\nby total time (s):")
    for bucket, seconds in totals.most_common(args.top):
        print(f"{seconds:8.3f}  {bucket}")
    print(f"\ntimeline ({args.windows} s windows: the largest bucket, its share of the window):")
    for index in sorted(windows):
        bucket, seconds = windows[index].most_common(1)[0]
        print(f"{index * args.windows:7.2f} s  {bucket}  ({seconds / args.windows:.0%})")
    out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
