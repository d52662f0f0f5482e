"""The SDF task of DI-Net: a field of a scene of balls in, its signed distance field out, queried anywhere.

Scenes: scene i of a seed holds 2–4 balls drawn from `numpy.random.default_rng((seed, i))` alone, centres
uniform in [-0.6, 0.6]³, radii uniform in [0.15, 0.35] (canonical units, domain [-1, 1]³).

Input field: the scene's soft occupancy, tanh(-sdf / 0.05), one channel in [-1, 1] (DI-Net fed an RGBA
SIREN of the rendered scene; here the input is the exact procedural field, evaluated at the network's
input point set, so the task tests the network, not a fit). Target: the SDF clipped to [-1, 1] (the net's
tanh range; the farthest point of the domain is ~1.5 from a ball), at query points drawn independently
of the input points, uniform over the domain. Error: mean absolute SDF error at fresh query points of the
held-out scenes (every 5th), beside the trivial baseline of the training scenes' mean SDF, a constant.

Training: AdamW with `fieldlab.learn.train.lr_at`'s warm-up and cosine; the input point set is a
scrambled Sobol set redrawn every step (`PointSampler`), as in classification.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fieldlab._errors import UserError
from fieldlab.learn.layers import Discretized
from fieldlab.learn.nets import net_config
from fieldlab.learn.points import PointSampler

FORMAT = "fieldlab.sdf-run"
EDGE = 0.05
"""Width of the occupancy's tanh edge."""


def ball_scenes(count: int, seed: int = 0, max_balls: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(centres (count, max_balls, 3), radii (count, max_balls)); missing balls sit far away with radius 0."""
    centres = torch.full((count, max_balls, 3), 100.0)
    radii = torch.zeros(count, max_balls)
    for i in range(count):
        rng = np.random.default_rng((seed, i))
        k = int(rng.integers(2, max_balls + 1))
        centres[i, :k] = torch.from_numpy(rng.uniform(-0.6, 0.6, (k, 3))).float()
        radii[i, :k] = torch.from_numpy(rng.uniform(0.15, 0.35, k)).float()
    return centres, radii


def scene_sdf(centres: torch.Tensor, radii: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Exact SDF (b, n) of the union of balls at points `coords` (n, 3): min over balls of |x - c| - r."""
    return (torch.cdist(coords.expand(len(centres), *coords.shape), centres) - radii[:, None, :]).min(-1).values


def occupancy(centres, radii, coords) -> torch.Tensor:
    """The input field (b, n, 1): soft occupancy in [-1, 1], +1 inside."""
    return torch.tanh(-scene_sdf(centres, radii, coords) / EDGE)[..., None]


@dataclasses.dataclass(frozen=True)
class SDFConfig:
    scenes: int = 200
    num_points: int = 512
    """Input points per scene per step."""
    num_queries: int = 512
    """Query points per scene per step (and per test batch)."""
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 20
    seed: int = 0
    net_options: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        for name in ("scenes", "num_points", "num_queries", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.scenes < 5:
            raise UserError(f"--scenes must be at least 5 (every 5th scene is held out), got {self.scenes}")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}")


@torch.no_grad()
def sdf_error(net: nn.Module, centres, radii, sampler: PointSampler, num_queries: int, seed: int) -> float:
    """Mean |predicted - true| clipped SDF at fresh uniform query points of the given scenes."""
    net.eval()
    points = sampler(10_000)
    queries = PointSampler(kind="random", n=num_queries, dim=3, seed=seed)(20_000)
    pred = net(Discretized(occupancy(centres, radii, points.coords), points), queries).values[..., 0]
    return float((pred - scene_sdf(centres, radii, queries.coords).clamp(-1, 1)).abs().mean())


def train_sdf(config: SDFConfig, out: str | Path | None = None, progress=print) -> dict[str, Any]:
    """Train the `sdf` network on ball scenes; metrics {test_mae, baseline_mae, …} (and RUN files if `out`)."""
    from fieldlab.learn.train import _write_json, lr_at

    config.validate()
    centres, radii = ball_scenes(config.scenes, config.seed)
    held = torch.arange(config.scenes) % 5 == 4
    cfg = net_config("sdf", **config.net_options).for_points(config.num_points, 3)
    torch.manual_seed(config.seed)
    net = cfg.build(1, 1, 3)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sampler = PointSampler(kind="rqmc", n=config.num_points, dim=3, seed=config.seed)
    train_c, train_r = centres[~held], radii[~held]
    began = time.time()
    for step in range(config.steps):
        net.train()
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        pick = torch.randint(len(train_c), (config.batch_size,), generator=g)
        c, r = train_c[pick], train_r[pick]
        points = sampler(step)
        queries = PointSampler(kind="random", n=config.num_queries, dim=3, seed=config.seed + 1)(step)
        pred = net(Discretized(occupancy(c, r, points.coords), points), queries).values[..., 0]
        loss = nn.functional.mse_loss(pred, scene_sdf(c, r, queries.coords).clamp(-1, 1))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config.lr, config.warmup, config.steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0 or step + 1 == config.steps:
            progress(f"step {step + 1}/{config.steps}  loss {loss.item():.5f}  {time.time() - began:.0f}s")

    test_c, test_r = centres[held], radii[held]
    queries = PointSampler(kind="random", n=config.num_queries, dim=3, seed=config.seed + 2)(0)
    constant = scene_sdf(train_c, train_r, queries.coords).clamp(-1, 1).mean()
    truth = scene_sdf(test_c, test_r, queries.coords).clamp(-1, 1)
    metrics = {"test_mae": sdf_error(net, test_c, test_r, sampler, config.num_queries, config.seed + 2),
               "baseline_mae": float((truth - constant).abs().mean()), "test_scenes": int(held.sum()),
               "train_scenes": int((~held).sum()), "seconds": round(time.time() - began, 2)}
    if out is not None:
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "net.safetensors.tmp"
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(tmp))
        tmp.replace(out / "net.safetensors")
        _write_json(out / "run.json", {"format": FORMAT, "net": "sdf", "net_options": cfg.to_dict(),
                                       "train": dataclasses.asdict(config), "metrics": metrics})
    return metrics
