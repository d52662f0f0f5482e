"""SDF targets of a store of mesh occupancy fields (`fit-dataset FOLDER_OF_MESHES`), for `train-sdf --store`.

The targets are recomputed from the source meshes when a run starts, as `sample:balls` scenes are
regenerated from their items: each mesh is labelled again on the store's R³ grid (the labels its field was
fitted to), and its signed distance on that grid is the Euclidean distance transform of those labels: from
a sample to the nearest sample on the other side, less half a step (the surface lies between them),
negative inside, in canonical units. It is exact to about half a grid step; a query between samples reads
it trilinearly. The store keeps fields only: the meshes are the ground truth, never the fits, and a folder
that no longer lists the files the store was fitted to (its identity) is refused.

Shapes: b meshes, n points, R grid samples per axis.
"""

from __future__ import annotations

import numpy as np
import torch

from fieldlab import _validate
from fieldlab._errors import UserError
from fieldlab.signals import get_modality, modality_names


def is_mesh_store(store) -> bool:
    """Whether `store` holds occupancy fields of a folder of meshes."""
    kind = store.signal.kind  # a modality fitted as occupancy fields (meshes), declared on the modality
    occupancy = kind in modality_names() and get_modality(kind).occupancy
    return occupancy and bool(store.signal.extra.get("occupancy")) and store.signal.channels == 1


def mesh_store_targets(store, rows: np.ndarray) -> torch.Tensor:
    """The SDF grids (len(rows), R, R, R) float32 of the meshes of `rows`."""
    from fieldlab.signals.modal_sources import open_dataset

    recorded = store.attrs.get("source", {})
    spec, side = str(recorded.get("spec", "")), store.signal.shape[0]
    source = open_dataset(spec, mesh_resolution=side)
    changed = next((key for key, value in source.identity.items() if recorded.get(key) != value), None)
    if changed is not None:
        raise UserError(f"{spec} no longer holds the meshes {store.path} was fitted to (its {changed} differs); "
                        "train-sdf --store computes the SDF targets from them")
    _validate.check_memory(4 * len(rows) * side**3, f"the SDF grids of {len(rows):,} meshes")
    items = store.column("source_index")[rows]
    return torch.from_numpy(np.stack([occupancy_sdf(source.raw(int(i))[..., 0], f"{spec}: mesh {i}")
                                      for i in items]))


def occupancy_sdf(occupied: np.ndarray, name: str) -> np.ndarray:
    """Signed distance (R, R, R) float32, negative inside, of a boolean occupancy grid over [-1, 1]³."""
    from scipy.ndimage import distance_transform_edt

    if occupied.all() or not occupied.any():
        raise UserError(f"{name} has no grid sample {'outside' if occupied.all() else 'inside'} it at "
                        f"{occupied.shape[0]}³, so it has no surface to measure a distance from (a larger "
                        "--mesh-resolution, or a closed mesh)")
    step = 2.0 / occupied.shape[0]
    inner, outer = distance_transform_edt(occupied), distance_transform_edt(~occupied)
    return (np.where(occupied, 0.5 - inner, outer - 0.5) * step).astype(np.float32)


def sdf_at(grids: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """SDF (b, n) at canonical `coords` (n, 3), read trilinearly from `grids` (b, R, R, R) whose samples sit
    at the cell centres of [-1, 1]³ (`grid_coords`' convention, which is align_corners=False)."""
    b, n = len(grids), len(coords)
    # grid_sample reads a point as (x, y, z) = (last, middle, first) axis of the grid.
    where = coords.flip(-1).to(grids.dtype).expand(b, 1, 1, n, 3)
    values = torch.nn.functional.grid_sample(grids[:, None], where, mode="bilinear", padding_mode="border",
                                             align_corners=False)  # (b, 1, 1, 1, n)
    return values[:, 0, 0, 0]
