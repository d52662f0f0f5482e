"""Inside/outside labels of a mesh on an R³ grid: signed ray crossings (`signals/mesh_grid.py`, what
`fieldlab fit MESH --field miner` and fit-dataset's mesh folders use now) against the winding-number
refinement they used before (`fit/miner_mesh.occupancy_grid`, now a triangle soup's path), same mesh, same
grid, same run. Prints one JSON line per resolution: seconds of each, their ratio and the cells they disagree
on. Open meshes (scans, the Stanford bunny: 4 holes) are labelled by rays too, their holes patched.

    python benchmarks/mesh_labels.py [--mesh PATH] [--resolution 128,256] [--device cpu|cuda] [--no-baseline]
                                     [--threads N] [--progress]

    python benchmarks/mesh_labels.py --device cuda --resolution 512 --mesh bunny.obj   # issue 25's row

PATH: a mesh file (.obj, .ply, .stl, .off, .glb; trimesh), or an .npz of `vertices` and `faces` (what
benchmarks/fit_modalities.py --prepare writes), for a machine without trimesh. Without --mesh: a bumpy
sphere of 20,480 faces. The winding-number path runs with its default backend (libigl on the CPU when it is
installed, PyTorch on a GPU).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def load(path: str | None):
    from fieldlab.signals.mesh import Mesh, read_mesh

    if path is None:
        import trimesh

        sphere = trimesh.creation.icosphere(subdivisions=5)
        unit = sphere.vertices
        bumps = 1 + 0.15 * np.sin(5 * unit[:, 0]) * np.cos(6 * unit[:, 1]) + 0.1 * unit[:, 2] ** 2
        return Mesh.from_arrays(unit * bumps[:, None], sphere.faces, source="bumpy sphere")
    if path.endswith(".npz"):
        arrays = np.load(path)
        return Mesh.from_arrays(arrays["vertices"], arrays["faces"], source=Path(path).name)
    return read_mesh(Path(path))


def timed(device: str, work):
    """(result, seconds) of work(), with the GPU's queue drained before and after."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    tick = time.perf_counter()
    result = work()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - tick


def winding_path(mesh, resolution: int, device: str) -> torch.Tensor:
    """The labels as they were before: the mesh treated as a triangle soup, so occupancy_grid refines winding
    numbers."""
    from fieldlab.fit import miner_mesh
    from fieldlab.signals import mesh_grid

    real = mesh_grid.label_grid
    mesh_grid.label_grid = lambda *args, **kwargs: None
    try:
        return miner_mesh.occupancy_grid(mesh, resolution, device=device)
    finally:
        mesh_grid.label_grid = real


def main() -> None:
    from fieldlab.signals.mesh import mesh_tensors
    from fieldlab.signals.mesh_grid import boundary_edges, grid_inside

    parser = argparse.ArgumentParser()
    parser.add_argument("--mesh", default=None)
    parser.add_argument("--resolution", default="128,256", help="comma list")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-baseline", action="store_true", help="time the ray crossings alone")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch's CPU threads (0: its default); on a "
                        "machine shared with other work, 1 avoids threads waiting on each other between small ops")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mesh = load(args.mesh)
    vertices, faces = mesh_tensors(mesh, args.device, torch.float64)
    grid_inside(vertices, faces, 64)  # one-off costs (CUDA context, kernels, lazy imports) out of the timings
    for resolution in (int(r) for r in args.resolution.split(",")):
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        rays, seconds = timed(args.device, lambda: grid_inside(vertices, faces, resolution, progress=args.progress))
        row = {"mesh": mesh.source, "faces": mesh.num_faces, "open_edges": len(boundary_edges(faces)),
               "resolution": resolution, "device": args.device,
               "torch_threads": torch.get_num_threads(), "rays_s": round(seconds, 3),
               "inside_cells": int(rays.sum())}
        if args.device.startswith("cuda"):
            row["rays_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if not args.no_baseline:
            winding, old_seconds = timed(args.device, lambda: winding_path(mesh, resolution, args.device))
            row.update({"winding_s": round(old_seconds, 3), "speedup": round(old_seconds / seconds, 1),
                        "mismatched_cells": int((winding != rays).sum())})
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
