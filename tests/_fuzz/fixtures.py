"""Valid, tiny inputs of every reader, made from scratch in a folder (nothing is read from outside the clone).

`make_inputs(folder)` writes the signal files, the dataset and the config files, then makes a field DIR, a
store and a run folder with the real commands, so each is exactly what fieldlab writes today.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from _fuzz.harness import run_cli

HDR_SUFFIXES = (".exr", ".hdr")
"""High-dynamic-range image formats that get a fixture once `fieldlab.signals` reads them."""


def hdr_suffixes() -> list[str]:
    from fieldlab.signals import IMAGE_SUFFIXES

    return [suffix for suffix in HDR_SUFFIXES if suffix in IMAGE_SUFFIXES]


def octahedron_obj() -> str:
    """A closed octahedron: 6 vertices, 8 outward-facing triangles."""
    vertices = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    faces = [(1, 3, 5), (3, 2, 5), (2, 4, 5), (4, 1, 5), (3, 1, 6), (2, 3, 6), (4, 2, 6), (1, 4, 6)]
    return "".join(f"v {x} {y} {z}\n" for x, y, z in vertices) + "".join(f"f {a} {b} {c}\n" for a, b, c in faces)


def write_mp4(path: Path, rng: np.random.Generator, frames: int = 6, side: int = 16) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=6)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray((rng.random((side, side, 3)) * 255).astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


CONFIG = {"field": "siren", "hidden_dim": 8, "num_layers": 2, "omega0": 30.0, "lr": 1e-3, "seed": 1,
          "batch_size": 0}
"""A --config file's options (tests/test_fuzz.py gives the input, steps and size on the command line)."""


def toml_text(options: dict) -> str:
    """A flat TOML document (the standard library reads TOML but does not write it)."""
    return "".join(f"{key} = {toml_value(value)}\n" for key, value in options.items())


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if value != value else "inf" if value == float("inf") else "-inf" if value == -float("inf") \
            else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return str(value)


def make_inputs(folder: Path) -> dict[str, Path]:
    """Every fixture, by name, under `folder`."""
    import imageio.v3 as iio
    import png
    import soundfile
    import tifffile

    rng = np.random.default_rng(19)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in (
        "png8.png", "png16.png", "float.tif", "pcm16.wav", "float.wav", "clip.mp4", "volume.npy", "octahedron.obj",
        "dataset.npz", "config.json", "config.toml")}
    iio.imwrite(paths["png8.png"], (rng.random((16, 16, 3)) * 255).astype(np.uint8))
    # 16-bit RGB goes through pypng (the path without Pillow's pixel limit).
    png.from_array((rng.random((16, 48)) * 65535).astype(np.uint16), "RGB;16").save(str(paths["png16.png"]))
    tifffile.imwrite(paths["float.tif"], rng.random((16, 16)).astype(np.float32))
    tone = np.sin(np.arange(800) / 5.0) * 0.5
    soundfile.write(paths["pcm16.wav"], tone, 8000, subtype="PCM_16")
    soundfile.write(paths["float.wav"], tone.astype(np.float32), 8000, subtype="FLOAT")
    write_mp4(paths["clip.mp4"], rng)
    np.save(paths["volume.npy"], rng.random((8, 8, 8)).astype(np.float32))
    paths["octahedron.obj"].write_text(octahedron_obj())
    np.savez(paths["dataset.npz"], images=(rng.random((4, 8, 8)) * 255).astype(np.uint8),
             labels=np.arange(4) % 2)
    paths["config.json"].write_text(json.dumps(CONFIG))
    paths["config.toml"].write_text(toml_text(CONFIG))
    for suffix in hdr_suffixes():
        from fieldlab.signals import write_image

        paths[f"hdr{suffix}"] = folder / f"hdr{suffix}"
        write_image(paths[f"hdr{suffix}"], (rng.random((16, 16, 3)) * 8).astype(np.float32))
    paths.update(_made_by_fieldlab(folder, paths))
    return paths


def _made_by_fieldlab(folder: Path, paths: dict[str, Path]) -> dict[str, Path]:
    made = {"field": folder / "field", "store": folder / "store", "run": folder / "run"}
    commands = [
        ["fit", paths["png8.png"], "--steps", "3", "--hidden-dim", "8", "--device", "cpu", "--quiet",
         "--out", made["field"]],
        ["fit-dataset", paths["dataset.npz"], "--field", "siren", "--hidden-dim", "8", "--steps", "2", "--device",
         "cpu", "--quiet", "--test-fraction", "0.25", "--out", made["store"]],  # one item held out for train
        ["train", made["store"], "--net", "mlp", "--hidden", "8", "--steps", "2", "--batch-size", "2", "--device",
         "cpu", "--out", made["run"]],
    ]
    for argv in commands:
        outcome = run_cli(argv, time_limit=120)
        assert outcome.code == 0 and outcome.error is None, f"making a fixture failed: {argv}\n{outcome.report()}"
    return made
