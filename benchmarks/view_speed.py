"""How fast `fieldlab view` opens a field of a 4096x4096 image and renders its deep-zoom tiles on this machine.

The field is written untrained (its speed does not depend on its weights) beside a 4096x4096 PNG that is its
original, so opening it reads the original too. "open" is the time from the command's start to the first
view: the field loaded, the page built and served, the tile levels and the level-0 tile answered (gradio's
import, once per process, is reported on its own). Each tile is a 256x256 render of a region never asked
before (no cache), at the native level and past it.

    python benchmarks/view_speed.py [--field siren|hashgrid] [--tiles 8]
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

SIDE = 4096


def write_field_dir(folder: Path, field: str) -> Path:
    from PIL import Image

    from fieldlab.fields import make_config
    from fieldlab.signals import Normalization, SignalInfo
    from fieldlab.store.field_dir import write_field

    original = folder / "original.png"
    ramp = np.linspace(0, 255, SIDE, dtype=np.float32)
    rgb = np.stack([ramp[None, :].repeat(SIDE, 0), ramp[:, None].repeat(SIDE, 1), np.full((SIDE, SIDE), 128.0)], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(original)
    config = make_config(field, in_dim=2, out_dim=3)
    signal = SignalInfo(kind="image", shape=(SIDE, SIDE), channels=3, normalization=Normalization("uint8", 0, 255),
                        domain=((0.0, SIDE), (0.0, SIDE)), source=str(original))
    out = folder / "field"
    out.mkdir()
    write_field(out, config.build(), config, signal, {"psnr": 0.0, "params": config.num_params(), "steps": 0,
                                                        "seconds": 0.0})
    return out


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as reply:
        return reply.read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--field", default="siren")
    parser.add_argument("--tiles", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        path = write_field_dir(Path(folder), args.field)
        began = time.perf_counter()
        import gradio  # noqa: F401
        imported = time.perf_counter() - began

        from fieldlab.view.server import Server

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        began = time.perf_counter()
        server = Server(path, port=port, device="cpu").start()
        get(server.url)
        levels = json.loads(get(server.url + "fieldlab/info?src=field"))
        get(server.url + "fieldlab/tile?src=field&z=0&x=0&y=0")
        opened = time.perf_counter() - began
        seconds = []
        native = levels["native"]
        for i in range(args.tiles):
            z = native + i % 2  # the signal's own resolution, then 2x past it
            began = time.perf_counter()
            get(server.url + f"fieldlab/tile?src=field&layer=field&z={z}&x={3 + i}&y={5 + i}")
            seconds.append(time.perf_counter() - began)
        began = time.perf_counter()
        get(server.url + f"fieldlab/tile?src=field&layer=field&z={native}&x=3&y=5")
        cached = time.perf_counter() - began
        server.close()
    print(json.dumps({"field": args.field, "image": f"{SIDE}x{SIDE}x3", "torch_threads": torch.get_num_threads(),
                      "gradio_import_s": round(imported, 2), "open_s": round(opened, 2),
                      "tile_ms_median": round(1000 * float(np.median(seconds)), 1),
                      "tile_ms_max": round(1000 * max(seconds), 1), "cached_tile_ms": round(1000 * cached, 1)}))


if __name__ == "__main__":
    main()
