"""MINER on meshes: the occupancy grid (refined coarse to fine) fitted as a volume by MINER's trainer."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from fieldlab.fields.miner import MinerConfig
from fieldlab.fit.config import FitConfig
from fieldlab.fit.loop import resolve_device

if TYPE_CHECKING:
    from fieldlab.fit.miner import MinerTrainConfig


@torch.no_grad()
def occupancy_grid(mesh, resolution: int, *, device="cpu", chunk: int = 2**20, backend="auto",
                   coarsest: int = 32, progress: bool = False) -> torch.Tensor:
    """Inside (bool (r, r, r)) at the centres of a `resolution`³ grid over the canonical cube.

    Generalized winding numbers (`signals.mesh.winding_number`) at every centre would cost r³ × faces;
    instead the grid is refined from `coarsest`³: a cell that no triangle's bounding box touches lies on
    one side of the surface, so its children inherit its winding number; only cells touched by the
    surface, or whose winding number is ambiguous (open meshes), are evaluated again at the next level.
    Each level is a phase of its own (`progress`: a bar, else a log line). The refinement is left to meshes
    that are mostly boundary (triangle soups); others are labelled by ray crossings (`signals.mesh_grid`): the
    same labels, in time linear in cells + faces.
    """
    from fieldlab.signals.mesh import mesh_tensors
    from fieldlab.signals.mesh_grid import label_grid

    labels = label_grid(mesh, resolution, device=device, progress=progress)  # None for a triangle soup
    if labels is not None:
        return labels
    vertices, faces = mesh_tensors(mesh, device)
    triangles = vertices[faces]
    r = resolution
    while r > coarsest and r % 2 == 0:
        r //= 2
    index = torch.stack(torch.meshgrid(*[torch.arange(r, device=device)] * 3, indexing="ij"), -1).reshape(-1, 3)
    number = _winding_at(index, r, vertices, faces, chunk, backend, progress).reshape(r, r, r)
    while r < resolution:
        unsure = _touched(triangles, r) | ((number - 0.5).abs() < 0.25)
        unsure = F.max_pool3d(unsure[None, None].float(), 3, 1, 1)[0, 0] > 0  # a cell of margin
        number = number.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2)
        r *= 2
        children = unsure.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2)
        index = torch.nonzero(children)
        number[children] = _winding_at(index, r, vertices, faces, chunk, backend, progress)
    return number > 0.5


def _winding_at(index, r, vertices, faces, chunk, backend, progress) -> torch.Tensor:
    from fieldlab.signals.mesh import label_points

    centres = (index.float() + 0.5) * (2 / r) - 1
    return label_points(centres, vertices, faces, chunk=chunk, backend=backend, progress=progress,
                        desc=f"labelling the {r}³ grid inside/outside the mesh")


def _touched(triangles: torch.Tensor, r: int) -> torch.Tensor:
    """Bool (r, r, r): cells that some triangle's bounding box overlaps (box counts by 3D prefix sums)."""
    lo = ((triangles.amin(1) + 1) * r / 2).floor().long().clamp(0, r - 1)
    hi = ((triangles.amax(1) + 1) * r / 2).floor().long().clamp(0, r - 1) + 1
    diff = torch.zeros(r + 1, r + 1, r + 1, device=triangles.device)
    for corner in range(8):
        bits = [(corner >> k) & 1 for k in range(3)]
        at = [hi[:, k] if b else lo[:, k] for k, b in enumerate(bits)]
        diff.index_put_(tuple(at), torch.full_like(at[0], (-1) ** sum(bits), dtype=diff.dtype), accumulate=True)
    return diff.cumsum(0).cumsum(1).cumsum(2)[:r, :r, :r] > 0


@dataclasses.dataclass
class MinerMeshFitResult:
    field: torch.nn.Module
    config: MinerConfig
    metrics: dict
    reconstruction: object
    extra_files: dict[str, Callable[[Path], None]] = dataclasses.field(default_factory=dict)


def fit_mesh(mesh, config: MinerConfig, fit_config: FitConfig = FitConfig(), occupancy=None, *,
             train: MinerTrainConfig | None = None, log_path: Path | None = None, progress: bool = False,
             inside: torch.Tensor | None = None, tensorboard_dir: Path | None = None, checkpoint: Path | None = None,
             resume: bool = False, identity: str = "") -> MinerMeshFitResult:
    """`fit.occupancy.fit_mesh` for MINER: the mesh's occupancy on the `resolution`³ grid (±1) is fitted
    as a volume with the MSE loss (the official code's choice); inside ⇔ value > 0, as for every
    occupancy field. Scored like `fit_mesh` (held-out points) and on every grid cell (`iou_grid`).
    `inside`: the grid's labels (`occupancy_grid`) when the caller has them already (one mesh fitted
    several ways); `label_seconds` is then 0. `tensorboard_dir`, `checkpoint`, `resume`, `identity`: as
    `fit.miner.fit`'s (the grid is labelled again on resume: it is a function of the mesh)."""
    from fieldlab.signals.mesh_export import field_grid, grid_surface
    from fieldlab.fit.miner import (MinerTrainConfig, field_metrics, fit_pyramid, predict,  # miner imports this module
                                    write_block_picture)
    from fieldlab.fit.miner_resume import PyramidCheckpoints
    from fieldlab.fit.occupancy import OccupancyConfig, held_out, surface_scores

    occupancy = occupancy or OccupancyConfig()
    occupancy.validate()
    device = resolve_device(fit_config.device)
    saves = PyramidCheckpoints.open(checkpoint, identity, resume)
    resolution = occupancy.resolution
    tick = time.perf_counter()
    if inside is None:
        inside = occupancy_grid(mesh, resolution, device=device, chunk=occupancy.chunk, backend=occupancy.backend,
                                progress=progress)
    elif tuple(inside.shape) != (resolution,) * 3:
        raise ValueError(f"inside has shape {tuple(inside.shape)}, not the {resolution}³ grid")
    inside = inside.to(device)
    label_seconds = time.perf_counter() - tick
    # labelled before the fit, so that what follows it under --max-seconds is the grid, surface and writing
    points, held = held_out(mesh, occupancy, device, progress=progress)
    values = inside.float()[..., None] * 2 - 1
    inside = inside.cpu().numpy()
    model, stats = fit_pyramid(values, config, fit_config, train=train or MinerTrainConfig(), log_path=log_path,
                               progress=progress, tensorboard_dir=tensorboard_dir, checkpoints=saves,
                               final_points=len(points) + resolution**3)  # the held-out points and the grid
    del values
    config = config.adapt((resolution,) * 3).replace(blocks=tuple(len(level) for level in model.levels))
    # One evaluation of the grid serves both the IoU over every cell and marching cubes.
    grid = field_grid(model, resolution, chunk=fit_config.eval_chunk, device=device, progress=progress)
    predicted = grid > 0
    iou_grid = int((predicted & inside).sum()) / max(int((predicted | inside).sum()), 1)
    del predicted, inside
    vertices, faces = grid_surface(grid, progress=progress)
    metrics, reconstruction = surface_scores(mesh, occupancy, predict(model, points), held.cpu(), vertices, faces)
    metrics.update({"iou_grid": round(iou_grid, 6), "label_seconds": round(label_seconds, 3)})
    metrics.update(field_metrics(model, config, stats, device))
    files = {"blocks.png": lambda path: write_block_picture(path, model.cpu())}
    return MinerMeshFitResult(field=model.cpu(), config=config, metrics=metrics, reconstruction=reconstruction,
                              extra_files=files)

