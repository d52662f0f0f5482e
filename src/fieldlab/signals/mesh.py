"""Triangle meshes as occupancy signals: read through trimesh, placed in the canonical cube, and labelled
inside or outside by the generalized winding number.

The mesh's bounding box is centred and scaled (one factor for all axes, so shapes keep their
proportions) until its longest side spans [-MARGIN, MARGIN]: the surface stays inside [-1, 1]^3 with room
around it. `Mesh.to_canonical` and `Mesh.from_canonical` map points between the file's units and the
field's canonical coordinates.

Shape letters: n points, v vertices, f faces.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from fieldlab import _validate
from fieldlab._errors import UserError, missing_extra
from fieldlab.signals._modality import Modality, register_modality
from fieldlab.signals._signal import Normalization, SignalInfo

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb")
MARGIN = 0.9
"""The longest side of the mesh's bounding box maps onto [-MARGIN, MARGIN]."""
Backend = Literal["auto", "torch", "igl"]


@dataclasses.dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh in its file's units, with the similarity transform into the canonical cube.

    canonical = (point - centre) * scale;  point = canonical / scale + centre.
    """

    vertices: np.ndarray
    """(v, 3) float64 vertex positions, in the file's units."""
    faces: np.ndarray
    """(f, 3) int64 vertex indices of each triangle."""
    centre: np.ndarray
    """(3,) centre of the bounding box, in the file's units."""
    scale: float
    """Canonical units per file unit."""
    source: str = ""

    @classmethod
    def from_arrays(cls, vertices, faces, *, source: str = "", margin: float = MARGIN) -> Mesh:
        """A mesh whose transform fits its bounding box into [-margin, margin]^3; bad arrays are a `UserError`."""
        name = source or "the mesh"
        vertices = np.asarray(vertices, dtype=np.float64)
        faces = np.asarray(faces)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise UserError(f"{name} is not a triangle mesh (vertices {vertices.shape}, faces {faces.shape})")
        if len(faces) == 0:
            raise UserError(f"{name} has no faces (a point cloud or an empty file cannot be fitted as a shape)")
        if not np.issubdtype(faces.dtype, np.integer) or faces.min() < 0 or faces.max() >= len(vertices):
            raise UserError(f"{name} has faces that point at vertices it does not have")
        _validate.require_finite(vertices, f"{name}'s vertex list", axes=("vertex", "coordinate"))
        low, high = vertices.min(axis=0), vertices.max(axis=0)
        extent = float((high - low).max())
        if extent <= 0 or _total_area(vertices, faces) <= 0:
            raise UserError(f"{name} is degenerate (all its triangles have zero area)")
        return cls(vertices, faces.astype(np.int64), (low + high) / 2, 2 * margin / extent, source)

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def to_canonical(self, points):
        """File units → canonical coordinates, for numpy arrays or tensors (..., 3)."""
        centre = torch.as_tensor(self.centre, dtype=points.dtype, device=points.device) \
            if isinstance(points, torch.Tensor) else self.centre
        return (points - centre) * self.scale

    def from_canonical(self, points):
        """Canonical coordinates → file units, for numpy arrays or tensors (..., 3)."""
        centre = torch.as_tensor(self.centre, dtype=points.dtype, device=points.device) \
            if isinstance(points, torch.Tensor) else self.centre
        return points / self.scale + centre

    def canonical_vertices(self) -> np.ndarray:
        return self.to_canonical(self.vertices)

    def info(self, resolution: int = 256) -> SignalInfo:
        """The `SignalInfo` stored with a field fitted to this mesh.

        The field's value is an occupancy logit: inside ⇔ value ≥ 0, which is what the bool
        normalization decodes. `shape` is the default render grid; `domain` is the cube, in file units,
        that maps onto [-1, 1]^3, so `grid_coords` and renders of sub-regions work as for any signal.
        """
        half = 1.0 / self.scale
        domain = tuple((float(c - half), float(c + half)) for c in self.centre)
        return SignalInfo(kind="mesh", shape=(resolution,) * 3, channels=1, normalization=Normalization("bool", 0.0, 1.0),
                          domain=domain, source=self.source,
                          extra={"vertices": len(self.vertices), "faces": self.num_faces})


def _total_area(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum() / 2)


def read_mesh(path: Path) -> Mesh:
    """A mesh from .obj, .ply, .stl, .off or .glb; a scene's meshes are concatenated, transforms applied."""
    try:
        import trimesh
    except ImportError:
        raise missing_extra("trimesh", "mesh") from None
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise UserError(f"unsupported mesh type {path.suffix or '(none)'!r} for {path}; meshes: {', '.join(MESH_SUFFIXES)}")
    try:
        # Unprocessed: processing drops non-finite vertices with their faces, hiding a damaged file.
        loaded = trimesh.load(path, file_type=path.suffix.lower().lstrip("."), process=False)
    except Exception as error:  # trimesh raises many types for a bad file; all mean the same to a user
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, ImportError):  # an optional text-encoding guesser trimesh tries on binary junk
            reason = f"not a readable {path.suffix.lower()} file"
        raise UserError(f"cannot read {path} as a mesh ({reason})") from None
    if isinstance(loaded, trimesh.Scene):
        parts = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]
        loaded = trimesh.util.concatenate(parts) if parts else None
    if not isinstance(loaded, trimesh.Trimesh):
        raise UserError(f"{path} has no faces (a point cloud or an empty file cannot be fitted as a shape)")
    Mesh.from_arrays(loaded.vertices, loaded.faces, source=str(path))  # refuses what processing would hide
    loaded.process()  # merges duplicate vertices, as loading does by default
    return Mesh.from_arrays(loaded.vertices, loaded.faces, source=str(path))


# -- inside or outside ------------------------------------------------------------------------------
def winding_number(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, *, chunk: int = 2**20,
                   backend: Backend = "torch") -> torch.Tensor:
    """Generalized winding number (n,) of points (n, 3) with respect to a triangle mesh (v, 3), (f, 3).

    The sum over faces of each triangle's signed solid angle seen from the point, over 4π (Jacobson et
    al., "Robust Inside-Outside Segmentation using Generalized Winding Numbers", SIGGRAPH 2013,
    https://igl.ethz.ch/projects/winding-number/). It is 1 inside and 0 outside a closed, outward-oriented
    mesh, and degrades gracefully on holes and open boundaries, so inside ⇔ winding number > 0.5.

    `backend="torch"` computes in `points`' dtype and device, in blocks of at most `chunk` point-face
    pairs, so memory stays bounded (about 80 bytes per pair in float32) however many points and faces
    there are. `"igl"` runs libigl's exact C++ sum of the same solid angles on the CPU (float64; two
    orders of magnitude faster than eager PyTorch there); `"auto"` takes it for CPU points when libigl
    is installed, and PyTorch otherwise.
    """
    backend = _resolve_backend(backend, points)
    if backend == "igl":
        return _igl_winding_number(points, vertices, faces)
    vertices = vertices.to(device=points.device, dtype=points.dtype)
    triangles = vertices[faces.to(points.device)]  # (f, 3 corners, 3)
    face_block = max(1, min(len(triangles), chunk))
    point_block = _point_block(len(triangles), chunk)
    result = torch.empty(len(points), dtype=points.dtype, device=points.device)
    for i in range(0, len(points), point_block):
        p = points[i:i + point_block]
        total = torch.zeros(len(p), dtype=points.dtype, device=points.device)
        for j in range(0, len(triangles), face_block):
            total += _solid_angles(p, triangles[j:j + face_block]).sum(dim=1)
        result[i:i + point_block] = total / (4 * math.pi)
    return result


def _resolve_backend(backend: Backend, points: torch.Tensor) -> str:
    """auto → libigl for CPU points when it is installed, else PyTorch."""
    if backend == "auto":
        return "igl" if points.device.type == "cpu" and _has_igl() else "torch"
    if backend not in ("igl", "torch"):
        raise UserError(f"winding-number backend must be auto, torch or igl, got {backend!r}")
    return backend


def _point_block(num_faces: int, chunk: int) -> int:
    """Points per block of the PyTorch winding number: `chunk` point-face pairs at most."""
    return max(1, chunk // max(1, min(num_faces, chunk)))


def _has_igl() -> bool:
    import importlib.util

    return importlib.util.find_spec("igl") is not None


def _igl_winding_number(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    try:
        import igl
    except ImportError:
        raise missing_extra("libigl", "mesh") from None

    def array(x: torch.Tensor, dtype) -> np.ndarray:
        return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=dtype)

    w = igl.winding_number(array(vertices, np.float64), array(faces, np.int64), array(points, np.float64))
    return torch.from_numpy(w).to(device=points.device, dtype=points.dtype)


def _solid_angles(points: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Signed solid angle (n, f) of each triangle (f, 3, 3) seen from each point (n, 3).

    Van Oosterom & Strackee (IEEE Trans. Biomed. Eng. 1983): with a, b, c the corners relative to the
    point, tan(Ω/2) = det[a b c] / (|a||b||c| + (a·b)|c| + (b·c)|a| + (c·a)|b|). atan2 keeps the quadrant,
    so Ω covers (-2π, 2π].
    """
    r = triangles[None] - points[:, None, None]  # (n, f, 3 corners, 3)
    a, b, c = r.unbind(dim=2)
    la, lb, lc = r.norm(dim=-1).unbind(dim=-1)
    det = (a * torch.linalg.cross(b, c, dim=-1)).sum(dim=-1)
    den = la * lb * lc + (a * b).sum(dim=-1) * lc + (b * c).sum(dim=-1) * la + (c * a).sum(dim=-1) * lb
    return 2 * torch.atan2(det, den)


def mesh_tensors(mesh: Mesh, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical vertices (v, 3) and faces (f, 3) as tensors on `device`."""
    vertices = torch.as_tensor(mesh.canonical_vertices(), dtype=dtype, device=device)
    return vertices, torch.as_tensor(mesh.faces, device=device)


def inside(mesh: Mesh, points: torch.Tensor, *, chunk: int = 2**20, backend: Backend = "auto") -> torch.Tensor:
    """Bool (n,): whether each canonical point (n, 3) lies inside `mesh` (winding number > 0.5)."""
    vertices, faces = mesh_tensors(mesh, points.device, points.dtype)
    return winding_number(points, vertices, faces, chunk=chunk, backend=backend) > 0.5


# -- training points --------------------------------------------------------------------------------
def sample_surface(vertices: torch.Tensor, faces: torch.Tensor, n: int, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """n points (n, 3) uniformly distributed over the area of a triangle mesh, on its device."""
    triangles = vertices[faces]  # (f, 3 corners, 3)
    a, b, c = triangles.unbind(dim=1)
    area = torch.linalg.cross(b - a, c - a, dim=-1).norm(dim=-1)
    face = torch.multinomial(area, n, replacement=True, generator=generator)
    u, v = torch.rand(2, n, 1, dtype=vertices.dtype, device=vertices.device, generator=generator)
    flip = (u + v) > 1  # fold the far half of the unit square back onto the triangle
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    return a[face] + u * (b - a)[face] + v * (c - a)[face]


def sample_occupancy(mesh: Mesh, *, n_surface: int, n_uniform: int, sigma: float | Sequence[float] = (0.01, 0.05),
                     seed: int = 0, device: str | torch.device = "cpu", chunk: int = 2**20,
                     backend: Backend = "auto", progress: bool = False,
                     seconds: float | None = None, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical points (n, 3) float32 and their occupancy (n, 1) float32 in {0, 1}, on `device`.

    `n_surface` points are drawn on the surface and moved by Gaussian noise of standard deviation
    `sigma` (canonical units; several values share the points equally, as in occupancy-network and
    SDF papers), then `n_uniform` points uniformly in [-1, 1]^3; all are clipped to the cube and labelled by
    the winding number (`winding_number`'s `chunk` and `backend`; `label_points`' `progress`). The same `seed`
    and device give the same points: the near ones, then the uniform ones. With `seconds` or `count` they come
    in one seeded random order instead, so that any prefix of it holds near and uniform points in their
    shares: with `seconds`, labelling stops after about that long and the points labelled so far are
    returned; with `count`, the first `count` are (a resumed fit labels the points its first run labelled in
    its time).
    """
    sigmas = (sigma,) if isinstance(sigma, (int, float)) else tuple(sigma)
    if n_surface < 0 or n_uniform < 0 or n_surface + n_uniform == 0:
        raise UserError(f"need a positive number of points, got {n_surface} near the surface and {n_uniform} uniform")
    if not sigmas or any(not (s >= 0) for s in sigmas):
        raise UserError(f"sigma must be non-negative, got {sigma}")
    generator = torch.Generator(device=device).manual_seed(seed)
    vertices, faces = mesh_tensors(mesh, device)
    near = sample_surface(vertices, faces, n_surface, generator=generator) if n_surface else vertices[:0]
    if n_surface:
        std = torch.cat([torch.full((k, 1), s, device=device) for s, k in zip(sigmas, _shares(n_surface, len(sigmas)))])
        near = near + std * torch.randn(near.shape, device=device, generator=generator)
    uniform = 2 * torch.rand(n_uniform, 3, device=device, generator=generator) - 1
    points = torch.cat([near, uniform]).clamp(-1, 1)
    if seconds is not None or count is not None:  # a prefix labelled in time holds near and uniform points in
        points = points[torch.randperm(len(points), device=device, generator=generator)][:count]  # their shares
    occupancy = label_points(points, vertices, faces, chunk=chunk, backend=backend, progress=progress,
                             seconds=seconds) > 0.5
    return points[:len(occupancy)], occupancy.float()[:, None]


LABEL_PAIRS = 2**20
"""Point-face pairs of the first piece of `label_points` (well under a second even for PyTorch on a CPU);
later pieces are sized to take about a quarter of a second."""
IGL_PIECE = 2**18
"""Points per piece with libigl, whose every call first builds a tree over all faces (0.2 s at 80k faces):
pieces sized by time would stay a few points long and take the labelling from seconds to an hour."""


def label_points(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, *, chunk: int = 2**20,
                 backend: Backend = "auto", progress: bool = False,
                 desc: str = "labelling points inside/outside the mesh", seconds: float | None = None) -> torch.Tensor:
    """`winding_number` (n,) of points (n, 3), in pieces so that a long labelling shows a bar that advances
    (a log line instead when `progress` is False); pieces are whole blocks of `winding_number`'s, so each
    point's number is the one a single call gives. With `seconds`, no piece begins after that long: the
    numbers of the first points only, at least one piece's."""
    from fieldlab._progress import in_pieces

    backend = _resolve_backend(backend, points)
    if backend == "igl":  # exact per point, whatever the pieces
        pieces = in_pieces(desc, len(points), IGL_PIECE, unit="point", bar=progress)
    else:  # whole blocks of winding_number's, sized by time
        size = max(1, LABEL_PAIRS // max(1, len(faces)))
        pieces = in_pieces(desc, len(points), size, unit="point", bar=progress, seconds=0.25,
                           multiple=_point_block(len(faces), chunk))
    began, parts = time.perf_counter(), []
    for start, stop in pieces:
        parts.append(winding_number(points[start:stop], vertices, faces, chunk=chunk, backend=backend))
        if seconds is not None and time.perf_counter() - began >= seconds:
            pieces.close()  # the phase ends here, its bar and log line saying how many were labelled
            break
    return torch.cat(parts) if parts else points.new_zeros(0)


def _shares(n: int, k: int) -> list[int]:
    """n split into k near-equal whole parts."""
    return [n // k + (i < n % k) for i in range(k)]


register_modality(Modality(
    name="mesh", dims=3, suffixes=MESH_SUFFIXES, read=None, output_suffixes=MESH_SUFFIXES,
    kept_suffixes=MESH_SUFFIXES, reconstruction_suffix=".obj",
    metrics=(),  # a mesh fit is scored on held-out points by fit/occupancy (iou, iou_uniform, chamfer)
    # Occupancy is a smooth indicator known at scattered points: ω₀ = 30 leaves floaters between them.
    field_defaults={"siren": {"first_omega0": 10.0, "omega0": 10.0}}, occupancy=True,
    not_read="meshes are fitted as occupancy fields, not read as signals",
    render_bytes=38,  # logits on a grid, 36.0 at 256³ with nothing written (`render_mesh` draws surfaces)
))
