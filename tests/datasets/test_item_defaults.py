"""A dataset's fields get a network and a bandwidth for the item's size, and are smooth between its samples."""

import numpy as np
import pytest
import torch

from fieldlab.cli.main import main
from fieldlab.fields import get_config_class
from fieldlab.fit.dataset_job import resolve_dataset_config
from fieldlab.learn.field_batch import FieldEvaluator
from fieldlab.signals import grid_coords
from fieldlab.signals.datasets import open_source
from fieldlab.store.field_store import FieldStore

pytestmark = pytest.mark.usefixtures("one_thread")

BANDWIDTH = {"siren": "omega0", "fourier": "sigma", "gauss": "scale", "wire": "scale", "finer": "omega0",
             "miner": "omega0", "local-global": "omega0"}


def _source(tmp_path, side: int, count: int = 2):
    images = np.random.default_rng(0).integers(0, 255, (count, side, side), dtype=np.uint8)
    np.savez(tmp_path / f"items{side}.npz", images=images)
    return open_source(str(tmp_path / f"items{side}.npz"))


@pytest.mark.parametrize("field", sorted(BANDWIDTH))
def test_the_bandwidth_follows_the_item_side_and_stays_below_the_whole_signal_default(tmp_path, field):
    knob = BANDWIDTH[field]
    at = {side: getattr(resolve_dataset_config(field, {}, _source(tmp_path, side, 1)), knob) for side in (8, 16, 1024)}
    whole = getattr(get_config_class(field)(), knob)  # made for one large signal
    assert at[16] == pytest.approx(2 * at[8])
    assert at[8] < whole and at[1024] == whole


def test_an_option_given_wins_and_keeps_its_linked_option_at_the_class_default(tmp_path):
    source = _source(tmp_path, 8)
    assert resolve_dataset_config("siren", {}, source).first_omega0 == 5.0
    given = resolve_dataset_config("siren", {"omega0": "30"}, source)
    assert (given.omega0, given.first_omega0) == (30.0, 30.0)
    assert resolve_dataset_config("siren", {"first_omega0": "7"}, source).omega0 == 30.0
    assert resolve_dataset_config("wire", {"scale": "9"}, source).omega0 == 2.0  # not linked to scale


def _smooth_photos(count: int) -> np.ndarray:
    """(count, 32, 32) smooth random images in [0, 1]: a few low frequencies each."""
    rng = np.random.default_rng(1)
    y, x = np.meshgrid(np.linspace(0, 1, 32), np.linspace(0, 1, 32), indexing="ij")
    out = np.zeros((count, 32, 32))
    for i in range(count):
        for _ in range(4):
            fy, fx, phase = rng.uniform(0, 2.5, 2).tolist() + [rng.uniform(0, 2 * np.pi)]
            out[i] += np.cos(2 * np.pi * (fy * y + fx * x) + phase)
    lo, hi = out.min(axis=(1, 2), keepdims=True), out.max(axis=(1, 2), keepdims=True)
    return (out - lo) / (hi - lo)


def _between_psnr(tmp_path, photos, *options) -> float:
    """PSNR against the 32×32 photos of SIRENs fitted by fit-dataset to their 8×8 area averages."""
    items = photos.reshape(len(photos), 8, 4, 8, 4).mean(axis=(2, 4))
    np.savez(tmp_path / "small.npz", images=(items * 255).round().astype(np.uint8))
    out = tmp_path / f"store{len(options)}"
    try:
        main(["fit-dataset", str(tmp_path / "small.npz"), "--field", "siren", "--steps", "300", "--target-psnr", "0",
              "--out", str(out), "--quiet", *options])
    except SystemExit as stop:
        assert stop.code in (0, None)
    store = FieldStore(out)
    box = ((0.0, 1.0), (0.0, 1.0))
    with torch.no_grad():
        fine = FieldEvaluator.from_store(store).values(store.read(slice(0, len(photos))), grid_coords(box, box, (32, 32)))
    fine = (fine[..., 0].numpy().reshape(-1, 32, 32) + 1) / 2
    mse = ((np.clip(fine, 0, 1) - photos) ** 2).mean(axis=(1, 2))
    return float(np.mean(10 * np.log10(1 / mse)))


def test_a_dataset_siren_is_a_sensible_function_between_the_pixel_centres(tmp_path):
    photos = _smooth_photos(6)
    default = _between_psnr(tmp_path, photos)
    whole_image = _between_psnr(tmp_path, photos, "--omega0", "30")
    # ω₀ 30, made for 512² photos, fits the 64 centres of an 8×8 item and is noise between them.
    assert default > whole_image + 3, (default, whole_image)
    assert default > 20, default


def test_spatial_functa_gives_a_latent_cell_two_samples_a_side_up_to_its_whole_signal_grid(tmp_path):
    grid = {side: resolve_dataset_config("spatial_functa", {}, _source(tmp_path, side, 1)).grid_size
            for side in (4, 8, 16, 1024)}
    assert grid == {4: 2, 8: 4, 16: 8, 1024: 8}
    # The user's own grid wins, even where it is the whole-signal default the item default replaces.
    given = resolve_dataset_config("spatial_functa", {"grid_size": "8"}, _source(tmp_path, 8, 1))
    assert given.grid_size == 8 and given.latent_shape() == (16, 8, 8)
