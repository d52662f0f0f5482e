"""Random ball scenes (DI-Net's SDF task): their exact signed distance, soft occupancy, and 2-D renders.

Scene i of a seed holds 2–4 balls drawn from `numpy.random.default_rng((seed, i))` alone: centres uniform
in [-0.6, 0.6]^d, radii uniform in [0.15, 0.35] (canonical units, domain [-1, 1]^d). In 3-D they are
balls; in 2-D (the images of `sample:balls`) the same draw makes discs.

The soft occupancy tanh(-sdf / EDGE) is +1 inside, -1 outside, with an edge about EDGE wide. `sample:balls`
renders it at the pixel centres of a BALLS_SIZE² image (values already in [-1, 1]), so a fitted store of
those images is the SDF task's input as neural fields.
"""

from __future__ import annotations

import numpy as np
import torch

EDGE = 0.05
"""Width of the occupancy's tanh edge (canonical units)."""
BALLS_SIZE = 32
BALLS_SEED = 0
"""The seed of `sample:balls`' scenes: a store of them is matched back to its geometry with it."""
DEFAULT_BALL_SCENES = 200


def ball_scenes(count: int, seed: int = 0, max_balls: int = 4, dim: int = 3,
                index: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(centres (count, max_balls, dim), radii (count, max_balls)) of scenes 0 … count-1 (or of the scene
    numbers `index`); missing balls sit far away with radius 0."""
    index = np.arange(count) if index is None else np.asarray(index)
    centres = torch.full((len(index), max_balls, dim), 100.0)
    radii = torch.zeros(len(index), max_balls)
    for row, i in enumerate(index):
        rng = np.random.default_rng((seed, int(i)))
        k = int(rng.integers(2, max_balls + 1))
        centres[row, :k] = torch.from_numpy(rng.uniform(-0.6, 0.6, (k, dim))).float()
        radii[row, :k] = torch.from_numpy(rng.uniform(0.15, 0.35, k)).float()
    return centres, radii


def scene_sdf(centres: torch.Tensor, radii: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Exact SDF (b, n) of the union of balls at points `coords` (n, d): min over balls of |x - c| - r."""
    coords = coords.to(centres.device)
    return (torch.cdist(coords.expand(len(centres), *coords.shape), centres) - radii[:, None, :]).min(-1).values


def occupancy(centres, radii, coords) -> torch.Tensor:
    """The input field (b, n, 1): soft occupancy in [-1, 1], +1 inside."""
    return torch.tanh(-scene_sdf(centres, radii, coords) / EDGE)[..., None]


def ball_images(count: int, size: int = BALLS_SIZE, seed: int = BALLS_SEED, index=None) -> np.ndarray:
    """(count, size, size) float32: 2-D scenes' occupancy at the pixel centres (row, column order), of scenes
    0 … count-1 or of the scene numbers `index` (then count = len(index))."""
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) * 2 / size - 1
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    centres, radii = ball_scenes(count, seed, dim=2, index=index)
    return occupancy(centres, radii, coords)[..., 0].reshape(len(centres), size, size).numpy()
