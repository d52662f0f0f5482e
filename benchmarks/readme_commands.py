"""Run every command the README shows, at its defaults, and time it (issue 22: each under 3 minutes on a
2-core CPU, at the quality the README states).

    python benchmarks/readme_commands.py                 # every command, in README order
    python benchmarks/readme_commands.py --only "fit sample:camera" --timeout 240

The commands are read from the README's ```bash blocks (and its Python snippet), not copied here, so a new
example is timed as soon as it is documented. Inputs the README names but the repository does not hold are
made in a scratch folder: `photo.png` (astronaut at 512², a photo-sized RGB image), `wider.png` (the 128-px camera
that `cam-lg` fits, 32 columns wider), and the test suite's stand-ins for `bach.wav`, `clip.mp4` and `bunny.obj`
(tests/_fixtures.py), and small `clips/`, `volumes/` and `meshes/` folders. Commands run one after another in that folder (a render needs the fit before it);
`pip install` and `pytest` are skipped; a
`fieldlab view` is timed until its page answers, then stopped. Prints one Markdown row per command: wall seconds, exit status and
the quality its output's metrics.json (or eval.json, run.json) reports, and the 1-minute load average as it
started. `uptime` is printed first: on a shared machine the load changes the times.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = ("pip install", "python -m pytest")


def readme_commands(readme: Path = ROOT / "README.md") -> list[str]:
    """The README's shell commands (comments and `pip install … &&` prefixes dropped) and its Python snippet
    as `python -c '…'`, in README order."""
    commands, block = [], None
    for line in readme.read_text().splitlines():
        if line.startswith("```"):
            if block is not None and block[0] == "python":
                commands.append("python -c " + shlex.quote("\n".join(block[1:])))
            block = None if block is not None else [line[3:].strip()]
            continue
        if block is None:
            continue
        if block[0] == "python":
            block.append(line)
        elif block[0] == "bash":
            command = re.sub(r"\s+#.*$", "", line).strip()
            command = command.split(" && ")[-1]
            if command and not command.startswith(SKIP):
                commands.append(command)
    return commands


def make_inputs(folder: Path) -> None:
    """The files the README's commands read, made from scikit-image's samples and the tests' stand-ins."""
    from PIL import Image
    from skimage import data

    sys.path.insert(0, str(ROOT / "tests"))
    from _fixtures import write_bumpy_mesh, write_chord_wav, write_turntable_mp4

    Image.fromarray(data.astronaut()).save(folder / "photo.png")
    Image.fromarray(wider_camera()).save(folder / "wider.png")
    write_chord_wav(folder / "bach.wav")
    write_turntable_mp4(folder / "clip.mp4")
    write_bumpy_mesh(folder / "bunny.obj")
    make_dataset_folders(folder)


def wider_camera():
    """Camera at 128 px as `fit sample:camera --max-size 128` reads it, 32 columns wider on the right (its
    last 32 columns mirrored): an image `extend cam-lg` can continue, whose first 128 columns are the ones
    cam-lg was fitted to, so the extended field's PSNR over the whole image means something."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "src"))
    import fieldlab

    signal = fieldlab.load_signal("sample:camera", max_size=128)
    camera = np.asarray(signal.info.normalization.decode(signal.values))[..., 0]  # (128, 128) uint8
    return np.concatenate([camera, camera[:, :-33:-1]], axis=1)


def make_dataset_folders(folder: Path) -> None:
    """`clips/` (24 one-second chords at 8 kHz, two classes), `volumes/` (12 smooth 16³ volumes) and `meshes/`
    (20 boxes, spheres and cylinders): the folders the README's fit-dataset lines of other modalities read."""
    import wave

    import numpy as np
    import trimesh

    rng = np.random.default_rng(0)
    t = np.arange(8000) / 8000
    for i in range(24):
        path = folder / "clips" / ("high" if i % 2 else "low") / f"{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        base = (220 if i % 2 == 0 else 660) * (1 + 0.05 * rng.standard_normal())
        samples = 0.3 * (np.sin(2 * np.pi * base * t) + 0.5 * np.sin(2 * np.pi * 1.5 * base * t))
        with wave.open(str(path), "wb") as f:
            f.setnchannels(1), f.setsampwidth(2), f.setframerate(8000)
            f.writeframes(np.rint(samples * 32767).astype("<i2").tobytes())
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 16)] * 3, indexing="ij"), axis=-1)
    for i in range(12):
        path = folder / "volumes" / ("ball" if i % 2 else "slab") / f"{i}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        centre = rng.uniform(-0.3, 0.3, 3)
        distance = np.linalg.norm(grid - centre, axis=-1) if i % 2 else np.abs(grid[..., 2] - centre[2])
        np.save(path, np.exp(-4 * distance**2).astype(np.float32))
    for i in range(20):
        kind = ("box", "sphere", "cylinder")[i % 3]
        mesh = {"box": lambda: trimesh.creation.box(extents=rng.uniform(0.3, 1.0, 3)),
                "sphere": lambda: trimesh.creation.icosphere(subdivisions=2, radius=rng.uniform(0.3, 1.0)),
                "cylinder": lambda: trimesh.creation.cylinder(radius=rng.uniform(0.2, 0.5),
                                                              height=rng.uniform(0.5, 1.5), sections=16)}[kind]()
        (folder / "meshes" / kind).mkdir(parents=True, exist_ok=True)
        mesh.export(folder / "meshes" / kind / f"{i}.obj")


def quality(command: str, folder: Path) -> str:
    """What the command's output says of its quality: PSNR/SNR/IoU of a fit, accuracy of a run, eval's cell."""
    words = shlex.split(command) if not command.startswith("python -c") else []
    out = words[words.index("--out") + 1] if "--out" in words else None
    if out is None and len(words) > 2 and words[1] == "eval":
        out = words[2]
    if out is None:
        return ""
    path = folder / out
    files = (("metrics.json", ("psnr", "snr", "iou", "accuracy", "test_mae")),
             ("run.json", ("test_accuracy", "test_miou", "test_mae")))
    for name, keys in (("eval.json", ()),) if words[1] == "eval" else files:  # eval writes into its run
        file = path / name
        if file.is_file():
            data = json.loads(file.read_text())
            data = data.get("metrics", data)
            if name == "eval.json":
                cell = data.get("training_cell") or {}
                value = cell.get("value") if isinstance(cell, dict) else cell
                if value is None:
                    return "training cell not among --points"
                gap = (data.get("point_set_gap") or {}).get("value")
                gap = f"{gap:.3g}" if isinstance(gap, (int, float)) else "not measured"
                return f"{data.get('metric', '')} {value:.4g} at the training cell, point-set gap {gap}"
            found = [f"{k} {data[k]:.4g}" for k in keys if isinstance(data.get(k), (int, float))]
            if found:
                return ", ".join(found)
    if (path / "zarr.json").is_file():  # a FieldStore
        sys.path.insert(0, str(ROOT / "src"))
        from fieldlab.store.field_store import FieldStore

        summary = FieldStore(path).summary()
        if not summary["complete"]:  # stopped before its first chunk was written: no PSNR to average
            return "0 fields written"
        return f"{summary['complete']:,} fields, mean PSNR {summary['psnr']['mean']:.2f} dB"
    return "written" if path.exists() else "nothing written"


def command_env() -> dict[str, str]:
    """CPU only, and this Python's environment first on PATH: `fieldlab`, `torchrun` and `python` are the ones
    this script runs in, whether or not its virtual environment was activated."""
    path = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PATH": path}


def serve(command: str, folder: Path, timeout: float) -> tuple[float, str]:
    """`fieldlab view`: seconds until the page it prints answers, then the server is stopped (it serves until
    Ctrl-C)."""
    import signal

    began = time.perf_counter()
    server = subprocess.Popen(command, shell=True, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=command_env(), start_new_session=True)
    try:
        for line in server.stdout:
            url = re.search(r"http://[\w.:]+/?", line)
            if url:
                return answered(url.group(0), began, timeout)
            if time.perf_counter() - began > timeout:
                return time.perf_counter() - began, f"> {timeout:g} s"
        return time.perf_counter() - began, f"{server.wait()}: no URL printed"
    finally:
        if server.poll() is None:  # a server that failed has already exited
            os.killpg(server.pid, signal.SIGINT)
        server.wait()


def answered(url: str, began: float, timeout: float) -> tuple[float, str]:
    """Seconds since `began` until `url` answers: a server may print its address just before it listens."""
    import urllib.error
    import urllib.request

    while True:
        try:
            urllib.request.urlopen(url, timeout=timeout).read()
            return time.perf_counter() - began, "ok (page served)"
        except urllib.error.URLError:
            if time.perf_counter() - began > timeout:
                return time.perf_counter() - began, f"> {timeout:g} s (no answer at {url})"
            time.sleep(0.2)


def run(command: str, folder: Path, timeout: float) -> tuple[float, str]:
    if command.startswith("fieldlab view"):
        return serve(command, folder, timeout)
    began = time.perf_counter()
    try:
        done = subprocess.run(command, shell=True, cwd=folder, timeout=timeout, capture_output=True, text=True,
                              env=command_env())
        status = str(done.returncode) if done.returncode else "ok"
        if command.startswith("python -c") and not done.returncode:  # the snippet prints its PSNR
            status += ": printed " + (done.stdout.strip().splitlines() or [""])[-1][:40]
        if done.returncode:
            status += ": " + (done.stderr.strip().splitlines() or [""])[-1][:80]
    except subprocess.TimeoutExpired:
        status = f"> {timeout:g} s"
    return time.perf_counter() - began, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="run the commands containing this text")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds before a command is stopped")
    parser.add_argument("--folder", type=Path, help="scratch folder (default: a new temporary one)")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="fieldlab-readme-"))
    folder.mkdir(parents=True, exist_ok=True)
    make_inputs(folder)
    print(f"machine: {os.cpu_count()} cores; {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print("| command | seconds | status | quality | load |\n|---|---|---|---|---|", flush=True)
    for command in readme_commands():
        if args.only and not any(text in command for text in args.only):
            continue
        load = os.getloadavg()[0]  # the machine is shared: the 1-minute load average as the command starts
        seconds, status = run(command, folder, args.timeout)
        shown = command.replace("\n", "; ")  # the Python snippet on one table row
        shown = shown if len(shown) < 100 else shown[:97] + "…"
        print(f"| `{shown}` | {seconds:.0f} | {status} | {quality(command, folder)} | {load:.1f} |", flush=True)


if __name__ == "__main__":
    main()
