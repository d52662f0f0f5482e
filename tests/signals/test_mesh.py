"""Meshes: reading, the canonical transform, the winding number (against analytic inside tests, libigl
and itself unchunked) and occupancy sampling."""

import numpy as np
import pytest
import torch
import trimesh

from fieldlab import UserError
from fieldlab.signals import mesh as mesh_module
from fieldlab.signals import grid_coords
from fieldlab.signals.mesh import MARGIN, Mesh, inside, mesh_tensors, read_mesh, sample_occupancy, winding_number

@pytest.fixture(scope="module")
def scan(bumpy_mesh):
    """An open, non-convex, off-centre mesh read from an OBJ file, like a scan (see tests/_fixtures.py)."""
    return read_mesh(bumpy_mesh.path)


def convex_inside(mesh: Mesh, points: torch.Tensor) -> torch.Tensor:
    """Exact inside test of a closed convex mesh with outward faces: behind every face's plane."""
    v = torch.as_tensor(mesh.canonical_vertices())
    a, b, c = v[torch.as_tensor(mesh.faces)].unbind(dim=1)
    normal = torch.linalg.cross(b - a, c - a, dim=-1)
    return (((points[:, None] - a[None]) * normal[None]).sum(-1) < 0).all(dim=1)


SOLIDS = {
    "icosphere": lambda: trimesh.creation.icosphere(subdivisions=2, radius=2.0),
    "box": lambda: trimesh.creation.box(extents=(3.0, 2.0, 1.5)),
}


@pytest.fixture(params=sorted(SOLIDS))
def solid(request):
    shape = SOLIDS[request.param]()
    return Mesh.from_arrays(shape.vertices + [5.0, -1.0, 2.0], shape.faces, source=request.param)


def test_a_scan_is_read_into_the_canonical_cube(scan, bumpy_mesh):
    assert scan.vertices.shape == bumpy_mesh.vertices.shape and np.array_equal(scan.faces, bumpy_mesh.faces)
    assert np.allclose(scan.vertices, bumpy_mesh.vertices, rtol=0, atol=1e-7)  # OBJ keeps 8 decimals
    assert scan.faces.dtype == np.int64 and scan.vertices.dtype == np.float64
    canonical = scan.canonical_vertices()
    low, high = canonical.min(axis=0), canonical.max(axis=0)
    assert np.isclose((high - low).max(), 2 * MARGIN) and np.allclose(low + high, 0)
    assert np.allclose(scan.from_canonical(canonical), scan.vertices)
    assert torch.allclose(scan.from_canonical(torch.as_tensor(canonical)), torch.as_tensor(scan.vertices))


def test_info_domain_is_the_canonical_transform(scan):
    info = scan.info(resolution=8)
    assert info.kind == "mesh" and info.shape == (8, 8, 8) and info.channels == 1
    coords = grid_coords(info.domain, info.domain, info.shape).double()  # canonical, from the domain
    lo = np.array([d[0] for d in info.domain])
    width = np.array([d[1] - d[0] for d in info.domain])
    source = lo + (coords.numpy() + 1) / 2 * width
    assert np.allclose(scan.to_canonical(source), coords.numpy(), atol=1e-6)


def test_winding_number_is_the_analytic_inside_test(solid):
    points = torch.rand(3000, 3, dtype=torch.float64) * 2 - 1
    vertices, faces = mesh_tensors(solid, dtype=torch.float64)
    w = winding_number(points, vertices, faces, backend="torch")
    truth = convex_inside(solid, points)
    assert 0.05 < truth.double().mean() < 0.9  # both labels occur
    assert torch.allclose(w, truth.double(), atol=1e-9)  # a closed mesh: exactly 1 or 0
    w32 = winding_number(points.float(), vertices.float(), faces, backend="torch")
    assert torch.equal(w32 > 0.5, truth)


def test_an_open_mesh_winding_number_is_the_closed_one_less_its_hole(scan, bumpy_mesh):
    vertices, faces = mesh_tensors(scan, dtype=torch.float64)
    hole = torch.as_tensor(scan.to_canonical(bumpy_mesh.hole.reshape(-1, 3)))
    hole_faces = torch.arange(len(hole)).reshape(-1, 3)
    body = torch.tensor([[0.0, 0.0, 0.0], [0.0, -0.3, 0.0], [0.2, -0.3, 0.1], [-0.2, -0.4, 0.0]], dtype=torch.float64)
    far = 3 * torch.nn.functional.normalize(torch.randn(200, 3, dtype=torch.float64), dim=1)
    anywhere = torch.rand(500, 3, dtype=torch.float64) * 2 - 1
    points = torch.cat([body, far, anywhere])
    w = winding_number(points, vertices, faces, backend="torch")
    closed = w + winding_number(points, hole, hole_faces, backend="torch")  # solid angles add up face by face
    assert torch.allclose(closed, closed.round(), atol=1e-8) and set(closed.round().tolist()) == {0.0, 1.0}
    assert (closed[:4].round() == 1).all() and (closed[4:204].round() == 0).all()
    assert (w[:4] > 0.97).all() and (w[:4] < 1).all(), w[:4]  # the hole in the bottom costs 1 to 2 %
    assert w[4:204].abs().max() < 0.01


def test_points_just_off_an_open_surface(scan):
    vertices, faces = mesh_tensors(scan)
    a, b, c = vertices[faces[::10]].unbind(dim=1)
    centroid, normal = (a + b + c) / 3, torch.nn.functional.normalize(torch.linalg.cross(b - a, c - a, dim=-1), dim=1)
    w_in = winding_number(centroid - 0.01 * normal, vertices, faces, backend="torch")
    w_out = winding_number(centroid + 0.01 * normal, vertices, faces, backend="torch")
    assert (w_in > 0.5).float().mean() > 0.99 and (w_out < 0.5).float().mean() > 0.99


def test_chunks_bound_memory_and_do_not_change_the_result(scan, monkeypatch):
    vertices, faces = mesh_tensors(scan)
    points = torch.rand(100, 3) * 2 - 1
    whole = winding_number(points, vertices, faces, chunk=len(points) * len(faces), backend="torch")
    pairs = []
    solid_angles = mesh_module._solid_angles

    def spy(p, triangles):
        pairs.append(len(p) * len(triangles))
        return solid_angles(p, triangles)

    monkeypatch.setattr(mesh_module, "_solid_angles", spy)
    for chunk in (2000, 7000, 100_000):
        pairs.clear()
        chunked = winding_number(points, vertices, faces, chunk=chunk, backend="torch")
        assert max(pairs) <= chunk and sum(pairs) == len(points) * len(faces)
        assert torch.allclose(chunked, whole, atol=1e-5) and torch.equal(chunked > 0.5, whole > 0.5)


def test_torch_agrees_with_libigl(scan):
    vertices, faces = mesh_tensors(scan, dtype=torch.float64)
    points = torch.rand(200, 3, dtype=torch.float64) * 2 - 1
    ours = winding_number(points, vertices, faces, backend="torch")
    theirs = winding_number(points, vertices, faces, backend="igl")
    assert theirs.dtype == torch.float64 and torch.allclose(ours, theirs, atol=1e-9)
    assert torch.equal(inside(scan, points.float(), backend="igl"), inside(scan, points.float(), backend="torch"))


def test_unknown_backend():
    with pytest.raises(UserError, match="backend"):
        winding_number(torch.zeros(1, 3), torch.eye(3), torch.tensor([[0, 1, 2]]), backend="cuda")


# -- reading --------------------------------------------------------------------------------------
def test_a_glb_scene_is_concatenated_with_its_transforms(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(extents=(1, 1, 1)))
    scene.add_geometry(trimesh.creation.box(extents=(1, 1, 1)), transform=trimesh.transformations.translation_matrix([3, 0, 0]))
    scene.export(tmp_path / "two.glb")
    mesh = read_mesh(tmp_path / "two.glb")
    assert mesh.num_faces == 24
    assert np.allclose(mesh.vertices.min(axis=0), [-0.5, -0.5, -0.5]) and np.allclose(mesh.vertices.max(axis=0), [3.5, 0.5, 0.5])
    assert np.isclose(mesh.scale, 2 * MARGIN / 4.0)


@pytest.mark.parametrize("name, content, message", [
    ("points.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "has no faces"),
    ("junk.obj", b"\x00\x01\xfe\xffjunk\x80" * 40, "cannot read|has no faces"),
    ("junk.ply", b"\x00\x01\xfe\xffjunk\x80" * 40, "cannot read"),
    ("flat.obj", "v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n", "degenerate"),
    ("bunny.xyz", "v 0 0 0\n", "unsupported mesh type"),
])
def test_bad_mesh_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(UserError, match=message) as error:
        read_mesh(path)
    assert "\n" not in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_mesh(tmp_path / "nothing.obj")


def test_bad_arrays():
    with pytest.raises(UserError, match="vertices it does not have"):
        Mesh.from_arrays(np.eye(3), [[0, 1, 3]])
    with pytest.raises(UserError, match="holds NaN at vertex 2, coordinate 1"):
        Mesh.from_arrays([[0, 0, 0], [1, 0, 0], [0, np.nan, 0]], [[0, 1, 2]])
    with pytest.raises(UserError, match="degenerate"):
        Mesh.from_arrays(np.ones((3, 3)), [[0, 1, 2]])


# -- sampling -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sphere():
    shape = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    return Mesh.from_arrays(shape.vertices, shape.faces, source="sphere")


def test_sample_occupancy_shapes_labels_and_seeds(sphere):
    points, occupancy = sample_occupancy(sphere, n_surface=3000, n_uniform=2000, sigma=(0.01, 0.05), seed=3)
    assert points.shape == (5000, 3) and occupancy.shape == (5000, 1)
    assert points.dtype == occupancy.dtype == torch.float32
    assert points.abs().max() <= 1 and set(occupancy.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(occupancy[:, 0] > 0.5, convex_inside(sphere, points.double()))
    uniform = occupancy[3000:].mean().item()
    volume = 4 / 3 * np.pi * MARGIN**3 / 8  # the sphere's share of the cube (the icosphere is a little smaller)
    assert abs(uniform - volume) < 0.05
    again, _ = sample_occupancy(sphere, n_surface=3000, n_uniform=2000, sigma=(0.01, 0.05), seed=3)
    other, _ = sample_occupancy(sphere, n_surface=3000, n_uniform=2000, sigma=(0.01, 0.05), seed=4)
    assert torch.equal(points, again) and not torch.equal(points, other)


def test_near_surface_points_are_near_the_surface(sphere):
    on, _ = sample_occupancy(sphere, n_surface=2000, n_uniform=0, sigma=0.0)
    v = torch.as_tensor(sphere.canonical_vertices()).float()
    a, b, c = v[torch.as_tensor(sphere.faces)].unbind(dim=1)
    normal = torch.nn.functional.normalize(torch.linalg.cross(b - a, c - a, dim=-1), dim=1)
    # On a convex surface, a point lies on one face's plane and behind all the others.
    height = ((on[:, None] - a[None]) * normal[None]).sum(-1).max(dim=1).values
    assert height.abs().max() < 1e-5
    near, _ = sample_occupancy(sphere, n_surface=20_000, n_uniform=0, sigma=0.05)
    spread = (near.norm(dim=1) - MARGIN).std().item()
    assert 0.04 < spread < 0.06


def test_bad_sampling_options(sphere):
    with pytest.raises(UserError, match="positive number of points"):
        sample_occupancy(sphere, n_surface=0, n_uniform=0)
    with pytest.raises(UserError, match="sigma"):
        sample_occupancy(sphere, n_surface=10, n_uniform=0, sigma=-0.1)
