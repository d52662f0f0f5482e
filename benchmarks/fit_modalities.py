"""Modalities benchmark: audio (bach.wav), video (gargoyle.mp4, first 60 frames) and a mesh (bunny.obj).

    python benchmarks/fit_modalities.py --data .bench_media --out modalities.json

`--data` holds `bach.npz` (samples, rate), `gargoyle60.npz` (frames: 60×512×512×3 uint8) and
`bunny.npz` (vertices, faces), made with `--prepare ../shared/data` (soundfile, PyAV and trimesh are
needed there, not on the GPU machine). Each architecture runs under a time budget with the library's
own loop (TF32 for audio, whose target is above bf16's ~50 dB ceiling; bf16 for video and the mesh; all
compiled); the naive reference (nn.Sequential SIREN, fp32, eager) runs a few hundred steps on the same
signal for the speed ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from fieldlab.fields import make_config  # noqa: E402
from fieldlab.fit import FitConfig, Fitter, metrics_for  # noqa: E402
from fieldlab.fit.occupancy import OccupancyConfig, fit_mesh  # noqa: E402
from fieldlab.signals import Signal, get_modality  # noqa: E402
from fieldlab.signals.audio import FLOAT_NORMALIZATION  # noqa: E402
from fieldlab.signals.mesh import Mesh  # noqa: E402

torch._dynamo.config.cache_size_limit = 64
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def prepare(shared: Path, data: Path) -> None:
    import imageio.v3 as iio
    import soundfile as sf
    import trimesh

    data.mkdir(parents=True, exist_ok=True)
    samples, rate = sf.read(shared / "audio" / "bach.wav", dtype="float32", always_2d=True)
    np.savez_compressed(data / "bach.npz", samples=samples, rate=rate)
    frames = [f for _, f in zip(range(60), iio.imiter(shared / "video" / "gargoyle.mp4", plugin="pyav"))]
    np.savez_compressed(data / "gargoyle60.npz", frames=np.stack(frames))
    mesh = trimesh.load(shared / "meshes" / "bunny.obj", force="mesh")
    np.savez_compressed(data / "bunny.npz", vertices=mesh.vertices, faces=mesh.faces)


def fit_signal(name: str, signal: Signal, params: int, fit_config: FitConfig, **options) -> dict:
    config = make_config(name, in_dim=signal.info.in_dim, out_dim=signal.info.channels, **options)
    config = config.adapt(signal.shape).with_params(params)
    torch.manual_seed(0)
    lr = get_modality(signal.info.kind).field_lr.get(name, type(config).lr)  # what `fieldlab fit` uses
    fitter = Fitter(config.build(), signal.coords(), signal.flat_values(), fit_config, lr=lr,
                    betas=type(config).adam_betas, eps=type(config).adam_eps)
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    while not fitter.should_stop():
        fitter.step()
    seconds = fitter.elapsed()
    prediction = fitter.predict().cpu().reshape(signal.values.shape)
    metrics = metrics_for(signal.info.kind, prediction, signal.values)
    return {"field": name, "params": config.num_params(), "steps": fitter.step_count, "seconds": seconds,
            "steps_per_s": fitter.step_count / seconds, "compile_seconds": fitter.compile_seconds,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0, **metrics}


class Sine(nn.Module):
    def __init__(self, omega: float):
        super().__init__()
        self.omega = omega

    def forward(self, x):
        return torch.sin(self.omega * x)


def naive_steps_per_s(in_dim: int, out_dim: int, hidden: int, coords: torch.Tensor, values: torch.Tensor,
                      steps: int, batch: int | None, first_omega: float = 30.0, bce: bool = False) -> float:
    """A plain SIREN (4 sine layers of `hidden`), fp32, eager: steps per second on the same data."""
    torch.backends.cuda.matmul.allow_tf32 = False
    dims = [in_dim] + [hidden] * 4
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers += [nn.Linear(a, b), Sine(first_omega if i == 0 else 30.0)]
    net = nn.Sequential(*layers, nn.Linear(hidden, out_dim)).to(DEVICE)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    coords, values = coords.to(DEVICE), values.to(DEVICE)
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    tick = None
    for step in range(steps + 10):
        if step == 10:
            sync()
            tick = time.perf_counter()
        if batch:
            index = torch.randint(coords.shape[0], (batch,), device=DEVICE)
            x, y = coords[index], values[index]
        else:
            x, y = coords, values
        out = net(x)
        loss = F.binary_cross_entropy_with_logits(out, y) if bce else (out - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync()
    return steps / (time.perf_counter() - tick)


def hidden_for(params: int, in_dim: int, out_dim: int) -> int:
    return make_config("siren", in_dim=in_dim, out_dim=out_dim).with_params(params).hidden_dim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(".bench_media"))
    parser.add_argument("--prepare", type=Path, help="make --data from this shared/data folder")
    parser.add_argument("--only", default="audio,video,mesh")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every time budget (smoke tests)")
    parser.add_argument("--out", type=Path, default=Path("fit_modalities.json"))
    parser.add_argument("--mesh-resolution", type=int, default=256, help="marching-cubes grid of the IoU/Chamfer scoring")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.data)
        return
    results: dict = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__}
    budget = lambda seconds: max(1.0, seconds * args.scale)  # noqa: E731

    def report(key: str, r: dict) -> None:
        results.setdefault(key, []).append(r)
        args.out.write_text(json.dumps(results, indent=1, default=str))
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
        print(key, json.dumps(shown), flush=True)

    if "audio" in args.only:
        data = np.load(args.data / "bach.npz")
        signal = Signal.from_array(data["samples"], kind="audio", normalization=FLOAT_NORMALIZATION,
                                   extra={"sample_rate": int(data["rate"])})
        for name, options in (("siren", {"first_omega0": 3000.0}), ("hashgrid", {}), ("fourier", {"sigma": 2000.0})):
            fc = FitConfig(steps=5000, max_seconds=budget(45), device=DEVICE, precision="tf32", compile=True)
            report("audio", fit_signal(name, signal, 200_000, fc, **options))
        h = hidden_for(200_000, 1, 1)
        report("audio_naive", {"steps_per_s": naive_steps_per_s(1, 1, h, signal.coords(), signal.flat_values(),
                                                                 max(20, int(300 * args.scale)), None, 3000.0)})
    if "video" in args.only:
        frames = np.load(args.data / "gargoyle60.npz")["frames"]
        signal = Signal.from_array(frames, kind="video", extra={"fps": 24.0})
        batch = 2**19
        for name, seconds in (("hashgrid", 120), ("siren", 45)):
            fc = FitConfig(steps=8000 if name == "hashgrid" else 2000, max_seconds=budget(seconds), device=DEVICE,
                           precision="bf16", compile=True, batch_size=batch)
            report("video", fit_signal(name, signal, 3_000_000, fc))
        h = hidden_for(3_000_000, 3, 3)
        report("video_naive", {"steps_per_s": naive_steps_per_s(3, 3, h, signal.coords(), signal.flat_values(),
                                                                 max(10, int(50 * args.scale)), batch)})
    if "mesh" in args.only:
        data = np.load(args.data / "bunny.npz")
        mesh = Mesh.from_arrays(data["vertices"], data["faces"], source="bunny.obj")
        occupancy = OccupancyConfig(points=int(2**21 * min(1, args.scale * 4)), eval_points=2**18,
                                    resolution=args.mesh_resolution)
        for name, seconds in (("hashgrid", 75), ("siren", 45)):
            defaults = get_modality("mesh").field_defaults.get(name, {})  # what `fieldlab fit` uses for a mesh
            config = make_config(name, in_dim=3, out_dim=1, **defaults).adapt((256, 256, 256)).with_params(200_000)
            fc = FitConfig(steps=4000, max_seconds=budget(seconds), device=DEVICE, precision="bf16", compile=True,
                           batch_size=2**18)
            r = fit_mesh(mesh, config, fc, occupancy)
            report("mesh", {"field": name, **r.metrics})
        h = hidden_for(200_000, 3, 1)
        points = torch.rand(2**20, 3) * 2 - 1
        labels = (points.norm(dim=-1, keepdim=True) < 0.5).float()  # speed only: the labels do not matter
        report("mesh_naive", {"steps_per_s": naive_steps_per_s(3, 1, h, points, labels, max(20, int(300 * args.scale)),
                                                                2**18, bce=True)})


if __name__ == "__main__":
    main()
