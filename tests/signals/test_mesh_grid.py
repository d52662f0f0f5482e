"""Grid labels by signed ray crossings (`signals/mesh_grid.py`): equal to the winding number's at every cell
centre of closed meshes (rays through edges and vertices included) and of open ones (holes patched and the
patches taken off); triangle soups left to winding numbers."""

import time

import numpy as np
import pytest
import torch
import trimesh

from fieldlab.signals import mesh_grid
from fieldlab.signals.mesh import Mesh, mesh_tensors, read_mesh, winding_number
from fieldlab.signals.mesh_grid import boundary_edges, grid_inside, label_grid


def canonical(vertices, faces) -> Mesh:
    """A mesh whose file units are the canonical ones, so vertices can be put on grid centres."""
    return Mesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), np.zeros(3), 1.0)


def box(lo, hi, *, inward: bool = False) -> tuple[np.ndarray, np.ndarray]:
    shape = trimesh.creation.box(bounds=(lo, hi))
    return shape.vertices, shape.faces[:, ::-1] if inward else shape.faces


def joined(*parts) -> Mesh:
    vertices, faces, offset = [], [], 0
    for v, f in parts:
        vertices.append(v)
        faces.append(np.asarray(f) + offset)
        offset += len(v)
    return canonical(np.concatenate(vertices), np.concatenate(faces))


def lens(r: int, n: int, seed: int = 0) -> Mesh:
    """A closed lens over an n×n lattice of every other column centre of an r³ grid: every vertex sits on a
    column, every edge (along x, y and diagonals) runs through columns, and the top and bottom sheets meet
    on the rim (folds seen from a column, and non-manifold edges at the corners)."""
    rng = np.random.default_rng(seed)
    at = -1 + (4 * np.arange(n) + 3) / r  # centres of columns 1, 3, 5, …
    x, y = (a.ravel() for a in np.meshgrid(at, at, indexing="ij"))
    ij = np.arange(n * n).reshape(n, n)
    rim = np.zeros((n, n), bool)
    rim[[0, -1]] = rim[:, [0, -1]] = True
    rim = rim.ravel()
    z0 = 0.013  # off the cells' centres in z, so no centre lies on the surface
    top = np.where(rim, z0, z0 + rng.uniform(0.1, 0.6, n * n))
    bottom = np.where(rim, z0, z0 - rng.uniform(0.1, 0.6, n * n))
    below = np.where(rim, ij.ravel(), n * n + np.cumsum(~rim) - 1)  # the rim's vertices are shared
    vertices = np.concatenate([np.c_[x, y, top], np.c_[x, y, bottom][~rim]])
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = ij[i, j], ij[i + 1, j], ij[i + 1, j + 1], ij[i, j + 1]
            for t in ((a, b, c), (a, c, d)) if (i + j) % 2 else ((a, b, d), (b, c, d)):
                faces += [list(t), [below[k] for k in t[::-1]]]
    return canonical(vertices, faces)


CLOSED = {
    "icosphere": lambda: Mesh.from_arrays(*_arrays(trimesh.creation.icosphere(subdivisions=2))),
    "torus": lambda: Mesh.from_arrays(*_arrays(trimesh.creation.torus(1.0, 0.4, major_sections=24,
                                                                       minor_sections=12))),
    "box": lambda: Mesh.from_arrays(*_arrays(trimesh.creation.box(extents=(3.0, 2.0, 1.5)))),
    "two disjoint boxes": lambda: joined(box((-0.8, -0.7, -0.6), (-0.1, 0.3, 0.2)),
                                         box((0.2, -0.3, 0.1), (0.7, 0.6, 0.8))),
    "overlapping boxes": lambda: joined(box((-0.8, -0.7, -0.6), (0.3, 0.3, 0.2)),  # winding number 2 where both are
                                        box((-0.2, -0.3, -0.1), (0.7, 0.6, 0.8))),
    "box with a cavity": lambda: joined(box((-0.8, -0.7, -0.6), (0.7, 0.6, 0.8)),
                                        box((-0.3, -0.2, -0.35), (0.4, 0.3, 0.45), inward=True)),
    "inside-out box": lambda: joined(box((-0.8, -0.7, -0.6), (0.7, 0.6, 0.8), inward=True)),
    "vertices on columns": lambda: lens(16, 7),
}


def _arrays(shape):
    return shape.vertices, shape.faces


def winding_labels(mesh: Mesh, r: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    index = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
    centres = lo + (index.double() + 0.5) * (hi - lo) / r
    vertices, faces = mesh_tensors(mesh, dtype=torch.float64)
    return (winding_number(centres, vertices, faces, backend="auto") > 0.5).reshape(r, r, r)  # libigl where installed


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_ray_crossings_label_a_closed_mesh_as_its_winding_number_does(name):
    mesh = CLOSED[name]()
    vertices, faces = mesh_tensors(mesh, dtype=torch.float64)
    assert len(boundary_edges(faces)) == 0
    labels = grid_inside(vertices, faces, 16)
    assert labels.dtype == torch.bool and labels.shape == (16, 16, 16)
    assert torch.equal(labels, winding_labels(mesh, 16))
    assert name == "inside-out box" or 0 < int(labels.sum()) < 16**3


def test_a_grid_over_part_of_the_cube_has_its_own_centres():
    mesh = CLOSED["torus"]()
    labels = grid_inside(*mesh_tensors(mesh), 12, -0.5, 0.9)  # float32 vertices are taken in float64
    assert torch.equal(labels, winding_labels(mesh, 12, -0.5, 0.9)) and labels.any()


def test_a_grid_beside_an_open_mesh_s_holes_is_labelled_too():
    mesh = two_holed_sphere()  # rims at z = ±0.7, far from a grid over [-0.15, 0.15]³
    assert torch.equal(grid_inside(*mesh_tensors(mesh), 6, -0.15, 0.15), winding_labels(mesh, 6, -0.15, 0.15))


def test_a_column_whose_crossings_do_not_cancel_is_labelled_by_winding_numbers(monkeypatch):
    mesh = CLOSED["icosphere"]()
    real = mesh_grid._crossings

    def lose_one(*args):  # a crossing lost as rounding might lose it: its column's count is off by one
        column, z, sign = real(*args)
        return column[1:], z[1:], sign[1:]

    monkeypatch.setattr(mesh_grid, "_crossings", lose_one)
    assert torch.equal(grid_inside(*mesh_tensors(mesh, dtype=torch.float64), 16), winding_labels(mesh, 16))


def open_box() -> Mesh:
    """A box without its top (two holes' worth of rim: one square), off-centre."""
    shape = trimesh.creation.box(bounds=((-0.7, -0.6, -0.8), (0.5, 0.7, 0.4)))
    top = shape.triangles_center[:, 2] > 0.39
    return canonical(shape.vertices, shape.faces[~top])


def two_holed_sphere() -> Mesh:
    """An icosphere with a hole at each pole: two rims, the fans of both at work in one grid."""
    shape = trimesh.creation.icosphere(subdivisions=2, radius=0.8)
    z = shape.triangles_center[:, 2]
    return canonical(shape.vertices, shape.faces[(z < 0.7) & (z > -0.7)])


@pytest.mark.parametrize("make", [open_box, two_holed_sphere], ids=["open box", "two holes"])
def test_an_open_mesh_is_labelled_as_its_winding_number_does(make):
    mesh = make()
    vertices, faces = mesh_tensors(mesh, dtype=torch.float64)
    assert len(boundary_edges(faces)) > 0
    labels = grid_inside(vertices, faces, 16)
    assert torch.equal(labels, winding_labels(mesh, 16)) and 0 < int(labels.sum()) < 16**3


def test_a_scan_s_grid_is_its_winding_number_s_and_a_triangle_soup_is_left_to_them(bumpy_mesh):
    scan = read_mesh(bumpy_mesh.path)
    rim = trimesh.Trimesh(scan.vertices, scan.faces, process=False).outline().entities[0].points
    assert len(boundary_edges(torch.as_tensor(scan.faces))) == len(rim) - 1  # the hole's rim, a closed loop
    assert torch.equal(label_grid(scan, 16), winding_labels(scan, 16))
    soup = trimesh.creation.box()
    soup.unmerge_vertices()  # closed in space, but every edge is open: patching it would cost more than rays
    assert label_grid(Mesh.from_arrays(soup.vertices, soup.faces), 8) is None


def test_miner_grid_is_labelled_by_rays_unless_the_mesh_is_a_triangle_soup(monkeypatch, bumpy_mesh):
    from fieldlab.fit import miner_mesh
    from fieldlab.fit.miner_mesh import occupancy_grid

    refined = []
    real = miner_mesh._winding_at
    monkeypatch.setattr(miner_mesh, "_winding_at", lambda index, *a: refined.append(len(index)) or real(index, *a))
    closed = CLOSED["torus"]()
    assert torch.equal(occupancy_grid(closed, 16, coarsest=4), winding_labels(closed, 16))
    scan = read_mesh(bumpy_mesh.path)
    assert torch.equal(occupancy_grid(scan, 16, coarsest=4), winding_labels(scan, 16))
    assert refined == []
    soup = trimesh.creation.box()
    soup.unmerge_vertices()
    occupancy_grid(Mesh.from_arrays(soup.vertices, soup.faces), 8, coarsest=4)
    assert refined and refined[0] == 4**3


def test_fit_dataset_labels_meshes_by_rays(monkeypatch, tmp_path, bumpy_mesh):
    from fieldlab.signals import mesh as mesh_module
    from fieldlab.signals.modal_sources import open_dataset

    folder = tmp_path / "shapes"
    folder.mkdir()
    trimesh.creation.torus(1.0, 0.4, major_sections=24, minor_sections=12).export(folder / "a_torus.obj")
    (folder / "b_scan.obj").write_bytes(bumpy_mesh.path.read_bytes())
    counted = []
    real = mesh_module.inside
    monkeypatch.setattr(mesh_module, "inside", lambda mesh, points, **k: counted.append(len(points)) or
                        real(mesh, points, **k))
    source = open_dataset(str(folder), mesh_resolution=12)
    for i, name in enumerate(["a_torus.obj", "b_scan.obj"]):
        labels = source.raw(i)
        assert labels.shape == (12, 12, 12, 1)
        assert np.array_equal(labels[..., 0], winding_labels(read_mesh(folder / name), 12).numpy())
    assert counted == []


def test_a_32_cubed_grid_takes_well_under_a_second():
    mesh = Mesh.from_arrays(*_arrays(trimesh.creation.icosphere(subdivisions=4)))  # 5,120 faces
    vertices, faces = mesh_tensors(mesh, dtype=torch.float64)
    grid_inside(vertices, faces, 8)  # the first call's one-off costs (lazy imports, allocator)
    tick = time.perf_counter()
    labels = grid_inside(vertices, faces, 32)
    assert time.perf_counter() - tick < 1.0  # about 0.05 s alone on a laptop core; slack for a loaded CI
    assert 0 < int(labels.sum()) < 32**3
