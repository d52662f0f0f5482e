"""Peak host memory of a render per output value, per modality: what each modality's `render_bytes` is set
from (the check that refuses a render larger than free memory). Linux only (/proc's peak RSS).

    python benchmarks/render_memory.py                  # every modality with a writer, 1.6·10⁷ values each
    python benchmarks/render_memory.py --values 40000000 --kinds image,audio

Each render runs in a fresh process, as `fieldlab render` does (grid, field, decode, write), after a small one
that imports the writer; its peak RSS growth over the values rendered is printed beside the table's figure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fieldlab.signals import get_modality, modalities  # noqa: E402

MEASURE = textwrap.dedent("""
    import math, sys
    from pathlib import Path
    from fieldlab.edit import render, render_grid, rendered_info
    from fieldlab.fields import make_config
    from fieldlab.signals import get_modality, write_signal
    from fieldlab.store import StoredField

    def status(key):
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))

    kind, values, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    modality = get_modality(kind)
    _, info = modality.example()
    config = make_config("siren", in_dim=len(info.shape), out_dim=info.channels, hidden_dim=2, num_layers=1)
    stored = StoredField(config.build().eval(), config, info, {})

    def run(size, name):  # as `fieldlab render` does
        grid = render_grid(stored, size=size)
        out = render(stored, size=grid[0], region=grid[1])
        write_signal(folder / (name + modality.reconstruction_suffix), info.normalization.decode(out),
                     rendered_info(info, grid[0], grid[1]))

    run([4] * len(info.shape), "warm")  # imports the writer
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
    before = status("VmRSS")
    size = [round((values / info.channels) ** (1 / len(info.shape)))] * len(info.shape)
    run(size, "big")
    print(status("VmHWM") - before, math.prod(size) * info.channels)
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=16 * 10**6)
    parser.add_argument("--kinds", default=",".join(m.name for m in modalities() if m.write is not None))
    args = parser.parse_args()
    print("| modality | values | peak RSS growth (MB) | bytes per value | table |")
    print("|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        with TemporaryDirectory() as folder:
            result = subprocess.run([sys.executable, "-c", MEASURE, kind, str(args.values), folder],
                                    capture_output=True, text=True, timeout=600)
        if result.returncode:
            print(f"| {kind} | failed: {result.stderr.strip().splitlines()[-1][:80]} | | | |")
            continue
        peak, values = map(int, result.stdout.split())
        cost = get_modality(kind).render_bytes
        print(f"| {kind} | {values:,} | {peak / 2**20:,.0f} | {peak / values:.1f} | {cost} |")


if __name__ == "__main__":
    main()
