"""Surfaces of occupancy fields: marching cubes on a grid evaluated in chunks, Chamfer distance, mesh files.

An occupancy field outputs one logit per point; its surface is the logit's 0 level set (probability
0.5). Grids use sample centres, as everywhere in fieldlab: sample i of r along an axis covering
[lo, hi) sits at lo + (i + 0.5) (hi - lo) / r, so surfaces extracted at different resolutions line up.

It lives beside the mesh reader (`signals/mesh.py`) because fitting scores a field by it and the render
stage writes with it: `fit/` cannot import `edit/`, which drives `fit/` (`extend`).

Shape letters: n points, v vertices, f faces.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from fieldlab._errors import UserError, missing_extra
from fieldlab._progress import in_pieces, phase
from fieldlab.signals.mesh import MESH_SUFFIXES, sample_surface

Bounds = Sequence[tuple[float, float]]
CUBE: Bounds = ((-1.0, 1.0),) * 3
MAX_GRID_SAMPLES = 2**31
"""The largest grid `extract_mesh` evaluates (1290³): its logits alone take 8 GiB of host memory."""


def _resolution3(resolution: int | Sequence[int]) -> tuple[int, int, int]:
    size = (resolution,) * 3 if isinstance(resolution, int) else tuple(int(r) for r in resolution)
    if len(size) == 1:
        size = size * 3
    if len(size) != 3 or any(r < 2 for r in size):
        raise UserError(f"a surface needs a resolution of at least 2 samples on each of 3 axes, got {resolution}")
    if math.prod(size) > MAX_GRID_SAMPLES:
        raise UserError(f"resolution {'x'.join(map(str, size))} is too large (at most {MAX_GRID_SAMPLES} samples)")
    return size


@torch.no_grad()
def field_grid(field: nn.Module, resolution: int | Sequence[int], *, bounds: Bounds = CUBE, chunk: int = 2**18,
               device: str | torch.device = "cpu", progress: bool = False) -> np.ndarray:
    """The field's first output channel on a grid of sample centres, (rx, ry, rz) float32 on the host.

    Coordinates are made per chunk from flat indices, so no more than `chunk` points are ever on the
    device; the first axis varies slowest, like `grid_coords`. `progress`: a bar (else a log line).
    """
    size = _resolution3(resolution)
    lo = torch.tensor([b[0] for b in bounds], dtype=torch.float64, device=device)
    step = torch.tensor([(b[1] - b[0]) / r for b, r in zip(bounds, size)], dtype=torch.float64, device=device)
    strides = torch.tensor([size[1] * size[2], size[2], 1], device=device)
    dims = torch.tensor(size, device=device)
    total = math.prod(size)
    grid = np.empty(total, dtype=np.float32)
    name = "x".join(map(str, size))
    for start, stop in in_pieces(f"evaluating the field on the {name} grid", total, chunk, unit="point", bar=progress):
        flat = torch.arange(start, stop, device=device)
        index = (flat[:, None] // strides) % dims  # (n, 3) grid index of each point
        coords = (lo + (index + 0.5) * step).float()
        grid[start:start + len(flat)] = field(coords)[:, 0].float().cpu().numpy()
    return grid.reshape(size)


def extract_mesh(field: nn.Module, resolution: int | Sequence[int], *, chunk: int = 2**18,
                 device: str | torch.device = "cpu", level: float = 0.0,
                 bounds: Bounds = CUBE, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (v, 3) float64 in the field's canonical coordinates and faces (f, 3) int64 of its surface.

    The `level` set of the field's logit on a `resolution`³ grid of sample centres over `bounds`, by
    scikit-image's marching cubes; faces are oriented with outward normals (inside is where the logit
    exceeds `level`). A field that never crosses `level` gives an empty mesh (0 vertices, 0 faces).
    `field` must already be on `device`; `progress`: bars (else log lines).
    """
    grid = field_grid(field, resolution, bounds=bounds, chunk=chunk, device=device, progress=progress)
    return grid_surface(grid, level=level, bounds=bounds, progress=progress)


def grid_surface(grid: np.ndarray, *, level: float = 0.0, bounds: Bounds = CUBE,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`extract_mesh` of a grid already evaluated by `field_grid` (so a caller that also scores the grid
    evaluates the field once); `grid` may be modified in place."""
    from skimage import measure

    # A NaN would poison marching cubes: count it as outside.
    grid = np.nan_to_num(grid, copy=False, nan=level - 1.0, posinf=np.finfo(np.float32).max, neginf=np.finfo(np.float32).min)
    if not (grid.min() < level < grid.max()):
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    step = np.array([(b[1] - b[0]) / r for b, r in zip(bounds, grid.shape)])
    with phase("marching cubes", 1, unit="grid", bar=progress) as advance:  # one call: it cannot advance
        vertices, faces, _, _ = measure.marching_cubes(grid, level=level, spacing=tuple(step), allow_degenerate=False)
        advance(1)
    lo = np.array([b[0] for b in bounds])
    # scikit-image winds faces clockwise seen from the larger values (our inside): reverse them to
    # face outward, as mesh files and the winding number expect.
    return vertices.astype(np.float64) + lo + step / 2, np.ascontiguousarray(faces[:, ::-1], dtype=np.int64)


# -- distances --------------------------------------------------------------------------------------
def chamfer_distance(points_a, points_b) -> float:
    """Symmetric Chamfer distance of two point sets (n, 3) and (m, 3): the mean of the two directed mean
    nearest-neighbour (Euclidean, not squared) distances; inf when either set is empty."""
    from scipy.spatial import cKDTree

    a, b = (np.asarray(p.detach().cpu() if isinstance(p, torch.Tensor) else p, dtype=np.float64) for p in (points_a, points_b))
    if len(a) == 0 or len(b) == 0:
        return math.inf
    a_to_b = cKDTree(b).query(a, workers=-1)[0].mean()
    b_to_a = cKDTree(a).query(b, workers=-1)[0].mean()
    return float((a_to_b + b_to_a) / 2)


def mesh_chamfer(vertices_a: np.ndarray, faces_a: np.ndarray, vertices_b: np.ndarray, faces_b: np.ndarray, *,
                 points: int = 100_000, seed: int = 0) -> float:
    """Chamfer distance between two surfaces, from `points` area-uniform samples on each, in the
    vertices' units; inf when either mesh has no faces."""
    if len(faces_a) == 0 or len(faces_b) == 0:
        return math.inf
    generator = torch.Generator().manual_seed(seed)
    samples = [sample_surface(torch.as_tensor(v, dtype=torch.float64), torch.as_tensor(f, dtype=torch.int64),
                              points, generator=generator) for v, f in ((vertices_a, faces_a), (vertices_b, faces_b))]
    return chamfer_distance(*samples)


# -- files ------------------------------------------------------------------------------------------
def write_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write a triangle mesh as .obj, .ply, .stl, .off or .glb (chosen by the suffix) through trimesh."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise UserError(f"cannot write a mesh as {suffix or '(no suffix)'!r} ({path}); meshes: {', '.join(MESH_SUFFIXES)}")
    if suffix == ".obj" and len(faces) == 0:  # trimesh writes bare "v"/"f" lines that readers reject
        path.write_text("# empty surface: the field never crosses its level\n")
        return
    try:
        import trimesh
    except ImportError:
        raise missing_extra("trimesh", "mesh") from None
    trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64), process=False).export(path)


def render_mesh(stored, *, size: Sequence[int] | None = None, region: Bounds | None = None, chunk: int = 2**18,
                device: str | torch.device = "cpu", progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The surface of a stored occupancy field (kind "mesh"), in the source mesh's units.

    `size`: samples per axis, one number for a cube (default: the field's `signal.shape`); `region`:
    per-axis (lo, hi) in the mesh's units (default: the whole domain, the canonical cube).
    """
    info = stored.signal
    if info.kind != "mesh":
        raise UserError(f"{stored.path or 'the field'} holds a {info.kind}, not a mesh")
    size = _resolution3(list(size) if size else list(info.shape))
    region = region or info.domain
    if len(region) != 3:
        raise UserError(f"--region needs 3 START:STOP ranges for a mesh, got {len(region)}")

    def canonical(x: float, axis: int) -> float:
        lo, hi = info.domain[axis]
        return 2 * (x - lo) / (hi - lo) - 1

    bounds = [(canonical(lo, k), canonical(hi, k)) for k, (lo, hi) in enumerate(region)]
    vertices, faces = extract_mesh(stored.module.to(device), size, chunk=chunk, device=device, bounds=bounds,
                                   progress=progress)
    lo = np.array([d[0] for d in info.domain])
    width = np.array([d[1] - d[0] for d in info.domain])
    return lo + (vertices + 1) / 2 * width, faces
