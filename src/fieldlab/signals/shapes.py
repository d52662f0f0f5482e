"""Synthetic shapes scenes: small grey images of discs, squares and triangles with per-pixel class masks.

Scene i of a seed is drawn from `numpy.random.default_rng((seed, i))` alone, so any process regenerates
the same image and mask for an item (a store keeps only the source spec; masks are rebuilt from it).

How a scene is drawn: a background of uniform grey level in [0.05, 0.25] plus pixel noise (σ 0.02);
then 1–3 shapes painted in order (later ones occlude earlier ones), each with
- a class: disc, square or triangle (uniform);
- a centre uniform in the middle 70% of the image, a circumradius uniform in [0.15, 0.3] of the side;
- a rotation uniform in [0, 2π) (squares and equilateral triangles; a disc has none);
- a grey level uniform in [0.55, 1.0], so shapes stand out but their class is told by form, not level.
A pixel belongs to a shape when its centre (i + 0.5) lies inside it; the mask holds the class of the last
shape covering the pixel (0 background, 1 disc, 2 square, 3 triangle). Images are float32 in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np

SHAPE_CLASSES = ("background", "disc", "square", "triangle")
DEFAULT_SIZE = 16
DEFAULT_SCENES = 1000


def _inside(kind: int, y: np.ndarray, x: np.ndarray, cy: float, cx: float, r: float, angle: float) -> np.ndarray:
    """Which points (y, x) lie inside the shape (pixel units)."""
    dy, dx = y - cy, x - cx
    if kind == 1:
        return dy * dy + dx * dx <= r * r
    # rotate the point into the shape's frame
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if kind == 2:  # square with circumradius r: half side r/√2
        half = r / math.sqrt(2)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    # equilateral triangle inscribed in the circle of radius r: three half-planes at distance r/2
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        t = 2 * math.pi * k / 3
        inside &= u * math.cos(t) + v * math.sin(t) <= r / 2
    return inside


def shapes_scene(index: int, size: int = DEFAULT_SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image (size, size) float32 in [0, 1], mask (size, size) int64) of scene `index`."""
    rng = np.random.default_rng((seed, index))
    y, x = np.mgrid[0:size, 0:size] + 0.5
    image = rng.uniform(0.05, 0.25) + rng.normal(0, 0.02, (size, size))
    mask = np.zeros((size, size), dtype=np.int64)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(1, 4))
        cy, cx = rng.uniform(0.15 * size, 0.85 * size, 2)
        r = rng.uniform(0.15, 0.3) * size
        angle = rng.uniform(0, 2 * math.pi)
        level = rng.uniform(0.55, 1.0)
        hit = _inside(kind, y, x, cy, cx, r, angle)
        image[hit] = level + rng.normal(0, 0.02, int(hit.sum()))
        mask[hit] = kind
    return np.clip(image, 0, 1).astype(np.float32), mask


def shapes_scenes(count: int, size: int = DEFAULT_SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images (count, size, size), masks (count, size, size)) of scenes 0 … count-1."""
    pairs = [shapes_scene(i, size, seed) for i in range(count)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
