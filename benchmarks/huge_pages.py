"""CPU commands with torch's transparent huge pages off and on (THP_MEM_ALLOC_ENABLE, which fieldlab's import sets).

    python benchmarks/huge_pages.py --photos DIR --video FILE --repeats 2 --out huge_pages.json

Each command runs as its own process (`python -m fieldlab …`, the program as a user runs it), once with
THP_MEM_ALLOC_ENABLE=0 (torch's default: 4 KiB pages) and once as fieldlab sets it, the two taking turns in every
round so that a load that comes and goes hits both. The machine's /sys/kernel/mm/transparent_hugepage/enabled is
printed: with `never` the two are the same, with `always` both get huge pages. Per run: wall seconds, user and
system CPU seconds and the peak resident memory
(`os.wait4`'s rusage of that one process). The outputs go to a temporary folder.

Commands: `fit-dataset` of a folder of photos (`--photos`, e.g. 16 of 512², `--steps` of them), the README's
quickstart fit with a fixed step count, and a video fit at its defaults (`--video`, optional).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def run(args: list[str], off: bool, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if off:
        env["THP_MEM_ALLOC_ENABLE"] = "0"
    else:
        env.pop("THP_MEM_ALLOC_ENABLE", None)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "fieldlab", *args, "--out", str(out), "--quiet"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{output[-2000:]}")
    return {"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "peak_gb": usage.ru_maxrss / 2**20,
            "result": output.strip().splitlines()[-1] if output.strip() else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="a folder of same-size photos")
    parser.add_argument("--steps", type=int, default=100, help="fit-dataset's steps")
    parser.add_argument("--video", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    a = parser.parse_args()
    commands = {
        "fit-dataset photos": ["fit-dataset", str(a.photos), "--steps", str(a.steps), "--device", "cpu"],
        "fit astronaut hashgrid, 300 steps": ["fit", "sample:astronaut", "--field", "hashgrid", "--batch-size",
                                              "32768", "--steps", "300", "--max-seconds", "0", "--device", "cpu"],
    }
    if a.video is not None:
        commands["fit video, defaults"] = ["fit", str(a.video), "--device", "cpu"]
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    print("transparent_hugepage/enabled:", thp.read_text().strip() if thp.exists() else "absent", flush=True)
    rows: dict[str, dict[str, list[dict]]] = {name: {"off": [], "on": []} for name in commands}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            for name, args in commands.items():
                for off in ((False, True) if r % 2 else (True, False)):
                    key = "off" if off else "on"
                    row = run(args, off, Path(tmp) / f"{r}-{key}-{list(commands).index(name)}")
                    rows[name][key].append(row)
                    print(f"{name:38s} {key:6s} wall {row['wall_s']:7.1f} s  user {row['user_s']:7.1f}  sys "
                          f"{row['sys_s']:7.1f}  peak {row['peak_gb']:5.2f} GB | {row['result'][:90]}", flush=True)
    print("\nmedians (4 KiB pages -> huge pages):")
    for name, runs in rows.items():
        med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall_s", "sys_s", "peak_gb")}
               for k, v in runs.items()}
        print(f"{name:38s} wall {med['off']['wall_s']:.1f} -> {med['on']['wall_s']:.1f} s "
              f"({med['off']['wall_s'] / med['on']['wall_s']:.2f}x), sys {med['off']['sys_s']:.1f} -> "
              f"{med['on']['sys_s']:.1f} s, peak {med['off']['peak_gb']:.2f} -> {med['on']['peak_gb']:.2f} GB")
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
