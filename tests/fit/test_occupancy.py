"""Fitting occupancy fields to meshes: the BCE objective, IoU, a tiny sphere fit and its surface."""

import math

import numpy as np
import pytest
import torch
import trimesh
import torch.nn.functional as F

from fieldlab import UserError
from fieldlab.signals.mesh_export import render_mesh, write_mesh
from fieldlab.fields import make_config
from fieldlab.fit import FitConfig
from fieldlab.fit import occupancy as occupancy_module
from fieldlab.fit.device_defaults import OCCUPANCY_POINTS
from fieldlab.fit.occupancy import OccupancyConfig, OccupancyFitter, fit_mesh, occupancy_iou
from fieldlab.signals.mesh import Mesh, read_mesh
from fieldlab.store import load_field, write_field


# A unit sphere (1,280 faces) fitted on 20,000 points, 300 steps of 1,024 on the CPU, seed 0. The bounds sit
# well clear of what each field reached when they were set (hashgrid IoU 0.937, Chamfer 0.019; siren
# 0.941, 0.033): the marching-cubes grid of 32³ has a voxel of 0.069 sphere radii.
SPHERE_FITS = {
    "hashgrid": (dict(table_size=2**12, num_levels=4, base_resolution=2, max_resolution=16, hidden_dim=16,
                      num_layers=1), None, 0.03),
    "siren": (dict(hidden_dim=32, num_layers=2, first_omega0=10.0), 3e-3, 0.045),
}
SMALL = OccupancyConfig(points=20_000, eval_points=10_000, surface_sigma=(0.02, 0.1), resolution=32, chamfer_points=10_000)


@pytest.fixture(scope="module")
def sphere():
    shape = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    return Mesh.from_arrays(shape.vertices + [2.0, 0.0, -1.0], shape.faces, source="sphere")


@pytest.fixture(scope="module", params=sorted(SPHERE_FITS))
def sphere_fit(request, sphere):
    options, lr, chamfer_bound = SPHERE_FITS[request.param]
    config = make_config(request.param, in_dim=3, out_dim=1, **options)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steps this small are all thread overhead, ten times slower on a busy machine
    try:
        result = fit_mesh(sphere, config, FitConfig(steps=300, batch_size=1024, lr=lr, device="cpu", seed=0), SMALL)
    finally:
        torch.set_num_threads(threads)
    return result, chamfer_bound


def test_sphere_fit_reaches_iou_and_chamfer(sphere_fit):
    result, chamfer_bound = sphere_fit
    m = result.metrics
    assert m["iou"] > 0.9 and m["iou_uniform"] > 0.97, m
    assert m["chamfer"] is not None and m["chamfer"] < chamfer_bound, m
    assert m["steps"] == 300 and m["params"] == sum(p.numel() for p in result.field.parameters())
    assert m["reconstruction_faces"] == result.reconstruction.num_faces > 1000


def test_reconstruction_is_in_the_mesh_units_and_faces_outward(sphere_fit, sphere):
    result, _ = sphere_fit
    vertices = result.reconstruction.vertices
    radius = np.linalg.norm(vertices - [2.0, 0.0, -1.0], axis=1)
    assert abs(np.median(radius) - 1.0) < 0.05
    a, b, c = (vertices[result.reconstruction.faces[:, k]] - [2.0, 0.0, -1.0] for k in range(3))
    signed_volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6  # > 0 only for outward faces
    assert abs(signed_volume / (4 / 3 * math.pi) - 1) < 0.1


def test_stored_mesh_field_renders_its_surface(sphere_fit, sphere, tmp_path):
    result, _ = sphere_fit
    write_field(tmp_path, result.field, result.config, sphere.info(resolution=24), result.metrics)
    write_mesh(tmp_path / "reconstruction.obj", result.reconstruction.vertices, result.reconstruction.faces)
    stored = load_field(tmp_path)
    assert stored.signal.kind == "mesh" and stored.metrics["iou"] == result.metrics["iou"]
    assert read_mesh(tmp_path / "reconstruction.obj").num_faces == result.reconstruction.num_faces
    vertices, faces = render_mesh(stored)  # the stored default: 24³ over the whole cube
    assert len(faces) > 500 and abs(np.median(np.linalg.norm(vertices - [2.0, 0.0, -1.0], axis=1)) - 1) < 0.05
    half = [(2.0, 4.0), stored.signal.domain[1], stored.signal.domain[2]]
    right, _ = render_mesh(stored, size=[16], region=half)
    assert right[:, 0].min() >= 2.0 - 1e-9 and right[:, 0].max() > 2.9


def test_bce_loss_single_and_stacked():
    fitter = OccupancyFitter.__new__(OccupancyFitter)
    logits, target = torch.randn(50, 1), (torch.rand(50, 1) > 0.5).float()
    fitter.stacked = False
    expected = F.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(fitter.loss(logits, target), expected)
    fitter.stacked = True
    stack, stack_target = torch.randn(3, 50, 1), (torch.rand(3, 50, 1) > 0.5).float()
    per_field = [F.binary_cross_entropy_with_logits(stack[i], stack_target[i]) for i in range(3)]
    assert torch.allclose(fitter.loss(stack, stack_target), sum(per_field))


def test_occupancy_iou():
    truth = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    assert occupancy_iou(torch.tensor([[3.0], [2.0], [-1.0], [-5.0]]), truth) == 1.0
    assert occupancy_iou(torch.tensor([[3.0], [-2.0], [1.0], [-5.0]]), truth) == pytest.approx(1 / 3)
    assert occupancy_iou(-torch.ones(4, 1), torch.zeros(4, 1)) == 1.0  # nothing to find, nothing found


def test_an_empty_surface_is_reported_not_fatal(sphere, monkeypatch):
    monkeypatch.setattr(occupancy_module, "extract_mesh", lambda *a, **k: (np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)))
    config = make_config("siren", in_dim=3, out_dim=1, hidden_dim=8, num_layers=1)
    small = OccupancyConfig(points=2000, eval_points=1000, resolution=8, chamfer_points=100)
    result = fit_mesh(sphere, config, FitConfig(steps=2, device="cpu"), small)
    assert result.metrics["chamfer"] is None and result.metrics["reconstruction_faces"] == 0
    assert result.reconstruction.num_faces == 0 and 0 <= result.metrics["iou"] <= 1
    assert result.metrics["batch_size"] == min(OCCUPANCY_POINTS, small.points)  # never more than there are


def test_a_mesh_that_encloses_no_volume_is_refused_before_fitting():
    """One triangle: every sample outside, so an empty field would have scored IoU 1 against an empty inside."""
    from fieldlab.signals.mesh import Mesh

    face = Mesh.from_arrays(np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]))
    config = make_config("siren", in_dim=3, out_dim=1, hidden_dim=8, num_layers=1)
    small = OccupancyConfig(points=2000, eval_points=1000, resolution=8, chamfer_points=100)
    with pytest.raises(UserError, match="encloses no volume: none of its 2,000 sample points is inside"):
        fit_mesh(face, config, FitConfig(steps=2, device="cpu"), small)


@pytest.mark.parametrize("fit_options, occupancy_options, field_dims, message", [
    (dict(target_psnr=30.0), {}, (3, 1), "target-psnr"),
    ({}, {}, (2, 1), "in_dim 3 and out_dim 1"),
    ({}, {}, (3, 3), "in_dim 3 and out_dim 1"),
    (dict(seed=7), dict(eval_seed=7), (3, 1), "held-out"),
    ({}, dict(surface_fraction=1.5), (3, 1), "surface-fraction"),
    ({}, dict(surface_sigma=()), (3, 1), "surface-sigma"),
    ({}, dict(points=0), (3, 1), "must be positive"),
])
def test_bad_options(sphere, fit_options, occupancy_options, field_dims, message):
    config = make_config("siren", in_dim=field_dims[0], out_dim=field_dims[1], hidden_dim=8)
    with pytest.raises(UserError, match=message):
        fit_mesh(sphere, config, FitConfig(steps=1, device="cpu", **fit_options), OccupancyConfig(**occupancy_options))


def test_metrics_are_json_ready(sphere_fit):
    import json

    result, _ = sphere_fit
    text = json.dumps(result.metrics, allow_nan=False)
    assert math.isfinite(json.loads(text)["chamfer"])


def test_fit_mesh_refuses_the_fused_kernel_itself(sphere):
    config = make_config("siren", in_dim=3, out_dim=1, hidden_dim=16, num_layers=2)
    with pytest.raises(UserError, match="--kernel fused fits a squared error"):
        fit_mesh(sphere, config, FitConfig(steps=1, kernel="fused", device="cpu"))


def test_labelling_under_a_time_budget_keeps_a_mixed_prefix_of_the_seeded_points(sphere, monkeypatch):
    from fieldlab.signals import mesh as mesh_module

    monkeypatch.setattr(mesh_module, "LABEL_PAIRS", 1)  # pieces of one block: many pieces
    full, full_labels = mesh_module.sample_occupancy(sphere, n_surface=3000, n_uniform=3000, seed=3, seconds=1e9,
                                                          backend="torch")
    assert len(full) == 6000 and set(full_labels.unique().tolist()) == {0.0, 1.0}
    part, labels = mesh_module.sample_occupancy(sphere, n_surface=3000, n_uniform=3000, seed=3, seconds=0.0,
                                                     backend="torch")
    assert 0 < len(part) < 6000  # the first piece only
    assert torch.equal(part, full[:len(part)]) and torch.equal(labels, full_labels[:len(part)])
    unbudgeted, _ = mesh_module.sample_occupancy(sphere, n_surface=3000, n_uniform=3000, seed=3, backend="torch")
    uniform = {tuple(p) for p in unbudgeted[3000:].tolist()}  # without a budget: near points, then uniform ones
    assert {tuple(p) for p in full.tolist()} == {tuple(p) for p in unbudgeted.tolist()}  # the same points
    share = sum(tuple(p) in uniform for p in part.tolist()) / len(part)
    assert 0.3 < share < 0.7, share  # the prefix holds both kinds, about half each


def test_a_time_limit_shrinks_the_reconstruction_grid_instead_of_passing_the_limit(caplog):
    from fieldlab._deadline import Deadline

    assert occupancy_module.grid_within(Deadline(0), 256, 1e-3) == 256  # no limit: as asked
    deadline = Deadline(100.0)
    assert occupancy_module.grid_within(deadline, 64, 1e-6) == 64 and not deadline.cuts  # it fits
    with caplog.at_level("INFO", logger="fieldlab"):
        smaller = occupancy_module.grid_within(deadline, 256, 1e-5)  # 256³ would take 210 s
    budget = deadline.left() - deadline.reserve() / 2
    assert smaller < 256 and smaller ** 3 * 1e-5 * occupancy_module.GRID_SHARE <= budget
    assert (smaller + 1) ** 3 * 1e-5 * occupancy_module.GRID_SHARE > budget * 0.99
    assert "grid is" in caplog.text and "not 256³" in caplog.text
    assert occupancy_module.grid_within(Deadline(1.0, start=0.0), 256, 1e-5) == occupancy_module.MIN_GRID


def test_a_mesh_fit_keeps_at_most_a_share_of_the_limit_for_what_follows_it(sphere):
    config = make_config("siren", in_dim=3, out_dim=1, hidden_dim=16)
    points, values = torch.rand(512, 3) * 2 - 1, torch.randint(0, 2, (512, 1)).float()
    fitter = OccupancyFitter(config.build(), points, values, FitConfig(steps=5, device="cpu", max_seconds=100),
                             lr=1e-3)
    fitter.step()
    fitter.final_points = 10**12  # a grid no limit could evaluate
    assert fitter.keep_seconds() <= fitter.step_seconds + OccupancyFitter.final_share * 100 + 1e-9


def test_a_resumed_fit_labels_the_points_its_first_run_labelled_in_time(sphere, tmp_path, monkeypatch):
    """A run whose labelling a time limit cut fits a prefix of the seeded points; the fit that resumes it
    (here without a limit, which alone would label every point in drawn order) fits that same prefix, so it
    ends as the uninterrupted run did."""
    from fieldlab.fit import loop
    from fieldlab.signals import mesh as mesh_module

    monkeypatch.setattr(mesh_module, "LABEL_PAIRS", 1)  # pieces of one block: the cut leaves the first one
    monkeypatch.setattr(occupancy_module, "LABEL_SHARE", 0.0)
    monkeypatch.setattr(loop, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint at every log line
    small = OccupancyConfig(points=4000, eval_points=2000, resolution=16, chamfer_points=2000, backend="torch")
    config = make_config("siren", in_dim=3, out_dim=1, hidden_dim=16, num_layers=1)
    checkpoint = tmp_path / "fit.ckpt"
    first = fit_mesh(sphere, config, FitConfig(steps=30, batch_size=256, device="cpu", seed=0, max_seconds=1e6),
                     small, checkpoint=checkpoint, identity="sphere")
    assert 0 < first.metrics["points"] < 4000 and first.metrics["stopped_by_time_limit"]
    assert torch.load(checkpoint, weights_only=True)["step"] == 20  # the last save before the end
    resumed = fit_mesh(sphere, config, FitConfig(steps=30, batch_size=256, device="cpu", seed=0), small,
                       checkpoint=checkpoint, resume=True, identity="sphere")
    assert resumed.metrics["points"] == first.metrics["points"]
    assert all(torch.equal(a, b) for a, b in zip(first.field.state_dict().values(),
                                                 resumed.field.state_dict().values()))
