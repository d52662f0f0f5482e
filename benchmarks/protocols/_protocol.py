"""What every protocol script shares: its common options, running `fieldlab` commands (recorded in
OUT/commands.txt exactly as a shell would take them), the table (OUT/table.csv), the plot (OUT/table.png)
and the one-line refusal when the real data is not on the machine.

The commands run in this process (`fieldlab.cli.main.main`), so a script pays for importing torch once;
each is the same command line a user would type, and `sh OUT/commands.txt` (from the folder the script was
started in) repeats the run.
"""

from __future__ import annotations

import argparse
import csv
import glob
import math
import os
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))  # a checkout without `pip install` still runs


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every protocol takes; a script adds its own."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0], epilog=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for table.csv, table.png, commands.txt and the runs")
    p.add_argument("--smoke", action="store_true", help="built-in data, tiny sizes and steps (CI; seconds on a CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (passed to every command)")
    p.add_argument("--seed", type=int, default=0)
    return p


def refuse(message: str) -> None:
    """A user error of the script itself (missing data, bad option): one line, exit 2, nothing run."""
    print(f"{Path(sys.argv[0]).name}: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


def require_path(spec: str, what: str, where: str) -> None:
    """Refuse a data path (a file, folder or glob; `sample:` specs always exist) that matches nothing."""
    if spec.startswith("sample:"):
        return
    prefix, colon, rest = spec.partition(":")
    path = rest.split(":")[0] if colon and prefix.isalnum() and not Path(spec).exists() else spec  # cifar10:PATH
    if not glob.glob(path):
        refuse(f"{what} not found at {spec}: {where}")


def cuda(device: str) -> bool:
    import torch

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def device_name(device: str) -> str:
    """The device every figure names (rule 3 of BENCHMARKS.md's comparisons)."""
    import torch

    if cuda(device):
        index = int(device.split(":")[1]) if ":" in device else 0
        return torch.cuda.get_device_name(index)
    return f"cpu ({os.cpu_count()} cores, torch {torch.__version__})"


class Protocol:
    """One protocol's run folder: `fieldlab(...)` runs and records a command, `table(...)` writes the CSV."""

    def __init__(self, args: argparse.Namespace):
        self.name = Path(sys.argv[0]).stem
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.commands = self.out / "commands.txt"
        self.commands.write_text(f"# {self.name}: {shlex.join(sys.argv[1:])}\n# device: {device_name(args.device)}\n")
        self.started = time.perf_counter()

    def say(self, message: str) -> None:
        print(f"[{self.name} {time.perf_counter() - self.started:6.1f} s] {message}", flush=True)

    def note(self, line: str) -> None:
        """A comment in commands.txt (e.g. how an option's value was chosen)."""
        with self.commands.open("a") as f:
            f.write(f"# {line}\n")

    def fieldlab(self, *argv: object) -> float:
        """Run `fieldlab ARGV` in this process; returns its seconds. A failing command ends the script with
        its own exit status (its one-line error is already on stderr)."""
        from fieldlab.cli.main import main

        argv = [str(a) for a in argv]
        line = shlex.join(["fieldlab", *argv])
        with self.commands.open("a") as f:
            f.write(line + "\n")
        self.say(line)
        start = time.perf_counter()
        try:
            main(argv)
        except SystemExit as stop:
            if stop.code:
                self.say(f"command failed (exit {stop.code}); see {self.commands}")
                raise
        return time.perf_counter() - start

    def table(self, rows: list[dict], columns: list[str]) -> Path:
        """OUT/table.csv; a number that is not finite is an error, never a silent cell."""
        for row in rows:
            for key, value in row.items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise RuntimeError(f"{self.name}: {key} is {value} in {row}")
        path = self.out / "table.csv"
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self.say(f"wrote {path} ({len(rows)} rows), {self.out / 'table.png'} and {self.commands}")
        return path

    def figure(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt

    def save(self, fig, title: str, device: str) -> None:
        fig.suptitle(f"{title}\n{device_name(device)}", fontsize=9)
        fig.tight_layout()
        fig.savefig(self.out / "table.png", dpi=110)
        self.figure().close(fig)


def read_json(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text())


def rounded(value: float, digits: int = 2) -> float:
    return round(float(value), digits)
