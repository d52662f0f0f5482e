"""`fieldlab fit` as a process ends without the interpreter's teardown once its DIR is written (issue 25)."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

# The command as the console script runs it, with an object whose finalizer says when the modules are torn down.
COMMAND = """
import sys
import importlib
cli = importlib.import_module("fieldlab.cli.main")  # the attribute fieldlab.cli.main is the function

class Teardown:
    def __del__(self):
        print("torn down", flush=True)

cli._kept_until_teardown = Teardown()
cli.main()
"""


def test_a_fit_process_that_skips_teardown_still_writes_everything_and_says_so(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(photo)
    out = tmp_path / "field"
    done = subprocess.run([sys.executable, "-c", COMMAND, "fit", str(photo), "--steps", "3", "--log-every", "1",
                           "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"-> {out}")  # the summary line was flushed before the exit
    assert "torn down" not in done.stdout  # the interpreter's teardown (0.4-0.7 s) was skipped
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
    assert {"field.safetensors", "config.json", "error.png", "training.png"} <= {p.name for p in out.iterdir()}
    assert not list(tmp_path.glob(".*"))  # no temporary folder or checkpoint left beside it

