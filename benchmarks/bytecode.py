"""Compiled bytecode for a command's imports, as a user's installed environment has it (issue 25).

pip writes a `.pyc` beside every module it installs; an interpreter then reads those instead of compiling
each module's source at every start. The GPU image these benchmarks run on has torch without them and runs
Python with PYTHONDONTWRITEBYTECODE=1, so every process compiled torch's ~1,000 modules again: `import
torch` took 3.5-5.0 s there (2026-12-07, H100 host) where an installed torch takes about 1-2 s. So a
benchmark of a command's wall time takes `--bytecode DIR`: every package folder on `sys.path` is compiled
once into DIR, and the commands it runs read it through PYTHONPYCACHEPREFIX, as they would read the `.pyc`
files of an installation. What a command costs on the image as it is stays measurable without the flag.

    python3 benchmarks/bytecode.py DIR     # compile only; prints the seconds it took
"""

from __future__ import annotations

import compileall
import os
import sys
import time
import warnings
from pathlib import Path


def use_bytecode(folder: Path) -> float:
    """Compile every folder of `sys.path` (site-packages, PYTHONPATH's) into `folder`, point
    PYTHONPYCACHEPREFIX there for this process's children, and return the seconds the compiling took."""
    folder = folder.resolve()
    os.environ["PYTHONPYCACHEPREFIX"] = str(folder)
    sys.pycache_prefix = str(folder)  # compileall writes where this process would read
    warnings.simplefilter("ignore")  # test files of other packages that compile with a SyntaxWarning
    start = time.perf_counter()
    for entry in dict.fromkeys(p for p in sys.path if p and Path(p).is_dir()):  # the standard library too: with
        compileall.compile_dir(entry, quiet=2, workers=0)  # a prefix, Python reads bytecode only from there
    return time.perf_counter() - start


if __name__ == "__main__":
    print(f"compiled in {use_bytecode(Path(sys.argv[1])):.1f} s into {sys.argv[1]}")
