"""Occupancy fields stop when their inside is right (issue 22): a mesh folder's ±1 items stop on the share of
samples whose sign is right (`target_accuracy`), not on a PSNR that ±1 values never reach; a mesh fit on a
CPU takes the device's mini-batches."""

import numpy as np
import pytest
import torch

from fieldlab.fields import make_config
from fieldlab.fit.batched import PSNR, SIGN_ACCURACY, BatchedFitConfig, fit_batch, stop_measure
from fieldlab.fit.metrics import field_sign_accuracies
from fieldlab.signals import grid_coords

pytestmark = pytest.mark.usefixtures("one_thread")


def balls(radii, side=10):
    """±1 occupancy grids (f, side³, 1) of centred balls, and their coordinates (side³, 3)."""
    coords = grid_coords(((-1.0, 1.0),) * 3, ((-1.0, 1.0),) * 3, (side,) * 3)
    inside = coords.norm(dim=-1) <= torch.tensor(radii)[:, None]
    return coords, torch.where(inside, 1.0, -1.0)[..., None]


def test_sign_accuracy_counts_the_samples_on_the_right_side_of_zero():
    target = torch.tensor([[[1.0], [-1.0], [1.0], [-1.0]]])
    assert field_sign_accuracies(torch.tensor([[[0.2], [-0.1], [-0.3], [-2.0]]]), target).tolist() == [0.75]
    assert stop_measure("mesh") is SIGN_ACCURACY and stop_measure("image") is PSNR and stop_measure("volume") is PSNR


def test_an_occupancy_field_of_an_easy_shape_stops_at_its_sign_accuracy_and_records_it():
    coords, values = balls([0.5, 0.7])
    config = make_config("siren", in_dim=3, out_dim=1, hidden_dim=16, num_layers=2, omega0=10.0, first_omega0=10.0)
    fit = BatchedFitConfig(device="cpu", steps=150, check_every=10, target_accuracy=0.99)
    result = fit_batch(config, coords, values, [0, 1], fit, measure=SIGN_ACCURACY)
    assert result.measure == "sign_accuracy"
    assert (result.steps < 150).all() and (result.quality >= 0.99).all()
    # PSNR is still measured (the store's psnr column), far below the 40 dB a ±1 grid would need to stop on it
    assert np.isfinite(result.psnr).all() and (result.psnr < 40).all()


def test_a_mesh_fit_on_a_cpu_takes_the_step_budgets_mini_batches_and_a_gpu_65536_points():
    from fieldlab.fit.device_defaults import occupancy_points_per_step

    # The README's `fit bunny.obj`: 2^20 points, the 198,657-parameter SIREN of a mesh.
    assert occupancy_points_per_step("cpu", 2**20, 198_657) == 16384
    assert occupancy_points_per_step("cuda", 2**20, 198_657) == 65536
    assert occupancy_points_per_step("cpu", 2000, 100) == 2000  # a small fit: all its points, as before


def test_an_unset_batch_size_of_a_mesh_fit_is_the_devices_and_a_given_one_is_kept(caplog):
    import trimesh

    from fieldlab.fit import FitConfig
    from fieldlab.fit.occupancy import OccupancyConfig, fit_mesh
    from fieldlab.signals.mesh import Mesh

    ball = trimesh.creation.icosphere(subdivisions=1, radius=0.6)
    mesh = Mesh.from_arrays(ball.vertices, ball.faces)
    config = make_config("siren", in_dim=3, out_dim=1, hidden_dim=128, num_layers=4)  # 50k parameters
    small = OccupancyConfig(points=2**15, eval_points=512, resolution=6, chamfer_points=100)
    with caplog.at_level("INFO", logger="fieldlab"):
        unset = fit_mesh(mesh, config, FitConfig(steps=1, device="cpu", max_seconds=0), small)
    assert unset.metrics["batch_size"] == 16384 and "16,384 points per step" in caplog.text
    given = fit_mesh(mesh, config, FitConfig(steps=1, device="cpu", max_seconds=0, batch_size=0), small)
    assert given.metrics["batch_size"] == 2**15  # --batch-size 0: every point, as before


def test_a_mesh_folder_store_stops_its_fields_early_and_store_info_says_by_what(tmp_path, cli):
    import trimesh

    from fieldlab.store.field_store import FieldStore

    for i, radius in enumerate((0.5, 0.8)):
        (tmp_path / "meshes").mkdir(exist_ok=True)
        trimesh.creation.icosphere(subdivisions=1, radius=radius).export(tmp_path / "meshes" / f"{i}.obj")
    store = tmp_path / "store"
    status, _, err = cli(["fit-dataset", tmp_path / "meshes", "--mesh-resolution", "8", "--steps", "300",
                          "--check-every", "10", "--hidden-dim", "16", "--out", store, "--device", "cpu", "--quiet"])
    assert status == 0, err
    assert (FieldStore(store).column("steps") < 300).all()  # stopped at 99.5 % of its signs, not at 40 dB
    status, out, _ = cli(["store", "info", store])
    assert status == 0 and "stopping  each field once 99.5 % of its grid samples had the right sign" in out


def test_the_first_steps_warm_up_is_not_taken_for_a_steps_cost_by_the_time_limits_estimate():
    # A mesh's first 4,096-point CPU step took 0.6 s and its estimate of the final evaluation (2.2M points)
    # stopped `fit bunny.obj` after 1 step; from the second step on the estimate uses a real step's time.
    from fieldlab.fit import FitConfig
    from fieldlab.fit.loop import Fitter

    coords, values = balls([0.5])
    field = make_config("siren", in_dim=3, out_dim=1, hidden_dim=8, num_layers=1).build()
    fitter = Fitter(field, coords, values[0], FitConfig(steps=3, device="cpu", max_seconds=0, batch_size=0), lr=1e-3)
    fitter.step()
    assert fitter.step_seconds == 0.0
    fitter.step()
    assert fitter.step_seconds > 0.0
