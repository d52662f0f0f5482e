"""Surfaces of occupancy fields: marching cubes in chunks, Chamfer distance, mesh files."""

import math

import numpy as np
import pytest
import torch
import trimesh
import torch.nn as nn

from fieldlab import UserError
from fieldlab.signals.mesh_export import chamfer_distance, extract_mesh, field_grid, mesh_chamfer, write_mesh
from fieldlab.signals.mesh import Mesh, mesh_tensors, read_mesh, winding_number



class Ball(nn.Module):
    """An analytic occupancy logit: positive inside the ball of `radius` about `centre`."""

    def __init__(self, radius: float = 0.5, centre=(0.0, 0.0, 0.0)):
        super().__init__()
        self.radius = radius
        self.register_buffer("centre", torch.tensor(centre))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return 10 * (self.radius - (coords - self.centre).norm(dim=-1, keepdim=True))


def test_grid_is_sample_centres_and_chunks_do_not_change_it():
    ball = Ball()
    grid = field_grid(ball, (4, 5, 6), chunk=7)
    assert grid.shape == (4, 5, 6) and grid.dtype == np.float32
    centre = np.array([-1 + 2 * (1 + 0.5) / 4, -1 + 2 * (3 + 0.5) / 5, -1 + 2 * (0 + 0.5) / 6])
    assert np.isclose(grid[1, 3, 0], 10 * (0.5 - np.linalg.norm(centre)), atol=1e-5)
    assert np.array_equal(grid, field_grid(ball, (4, 5, 6), chunk=2**18))


def test_extracted_ball_is_round_closed_and_outward():
    vertices, faces = extract_mesh(Ball(0.5, (0.1, 0.0, -0.2)), 32, chunk=1000)
    assert vertices.dtype == np.float64 and faces.dtype == np.int64 and len(faces) > 500
    radius = np.linalg.norm(vertices - [0.1, 0.0, -0.2], axis=1)
    assert np.abs(radius - 0.5).max() < 2 / 32  # within a voxel
    assert trimesh.Trimesh(vertices, faces).is_watertight
    w = winding_number(torch.tensor([[0.1, 0.0, -0.2], [0.9, 0.9, 0.9]], dtype=torch.float64),
                       torch.as_tensor(vertices), torch.as_tensor(faces), backend="torch")
    assert torch.allclose(w, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-6)  # outward faces


def test_bounds_select_a_region():
    vertices, _ = extract_mesh(Ball(0.5), 16, bounds=((0.0, 1.0), (-1.0, 1.0), (-1.0, 1.0)))
    assert vertices[:, 0].min() >= 0 and np.abs(np.linalg.norm(vertices, axis=1) - 0.5).max() < 2 / 16


@pytest.mark.parametrize("field", [Ball(radius=-1.0), Ball(radius=5.0)])
def test_a_field_without_a_surface_gives_an_empty_mesh(field, tmp_path):
    vertices, faces = extract_mesh(field, 8)
    assert vertices.shape == (0, 3) and faces.shape == (0, 3)
    assert mesh_chamfer(vertices, faces, np.eye(3), np.array([[0, 1, 2]])) == math.inf
    write_mesh(tmp_path / "empty.obj", vertices, faces)
    loaded = trimesh.load(tmp_path / "empty.obj")  # a valid, empty file
    assert len(getattr(loaded, "vertices", [])) == 0
    with pytest.raises(UserError, match="no faces"):
        read_mesh(tmp_path / "empty.obj")


def test_bad_resolution():
    with pytest.raises(UserError, match="resolution"):
        extract_mesh(Ball(), 1)
    with pytest.raises(UserError, match="too large"):
        extract_mesh(Ball(), 2000)


def test_chamfer_distance():
    a = torch.rand(2000, 3)
    assert chamfer_distance(a, a) == 0
    shift = torch.tensor([0.0, 0.0, 0.01])
    assert chamfer_distance(a, a + shift) <= 0.01 + 1e-7
    assert abs(chamfer_distance(np.zeros((1, 3)), np.array([[3.0, 4.0, 0.0]])) - 5.0) < 1e-12
    assert chamfer_distance(a, np.zeros((0, 3))) == math.inf


def test_mesh_chamfer_of_two_spheres_is_their_gap():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    d = mesh_chamfer(sphere.vertices, sphere.faces, 1.1 * sphere.vertices, sphere.faces, points=20_000)
    assert 0.1 <= d < 0.11  # every point is at least 0.1 from the other sphere; sampling adds a little


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".stl", ".off", ".glb"])
def test_write_mesh_round_trip(tmp_path, suffix):
    vertices, faces = extract_mesh(Ball(0.6), 12)
    path = tmp_path / f"ball{suffix}"
    write_mesh(path, vertices, faces)
    back = read_mesh(path)
    assert back.num_faces == len(faces)
    assert np.abs(np.linalg.norm(back.vertices, axis=1) - 0.6).max() < 2 / 12
    inside = winding_number(torch.zeros(1, 3, dtype=torch.float64), *mesh_tensors(Mesh(back.vertices, back.faces, np.zeros(3), 1.0), dtype=torch.float64), backend="torch")
    assert abs(inside.item() - 1) < 1e-6


def test_write_mesh_refuses_other_suffixes(tmp_path):
    with pytest.raises(UserError, match="cannot write a mesh"):
        write_mesh(tmp_path / "ball.png", np.eye(3), np.array([[0, 1, 2]]))
