import pytest
import torch

from fieldlab import UserError
from fieldlab.edit import parse_region, render
from fieldlab.fields import make_config
from fieldlab.fit import FitConfig, fit
from fieldlab.store import StoredField


@pytest.fixture(scope="module")
def stored(camera32):
    config = make_config("siren", in_dim=2, out_dim=1, hidden_dim=32)
    result = fit(camera32, config, FitConfig(steps=50, device="cpu"))
    return StoredField(result.field.eval(), config, camera32.info, result.metrics), result


def test_render_at_native_resolution_is_the_reconstruction(stored):
    field, result = stored
    assert torch.allclose(render(field), result.prediction, atol=1e-6)


def test_chunks_do_not_change_the_render(stored):
    field, _ = stored
    assert torch.equal(render(field, size=[64, 64], chunk=100), render(field, size=[64, 64]))


def test_super_resolution_and_region_line_up(stored):
    field, _ = stored
    full = render(field, size=[96, 96])  # 3× the samples
    zoom = render(field, size=[48, 48], region=[(8, 24), (0, 16)])
    assert full.shape == (96, 96, 1) and zoom.shape == (48, 48, 1)
    assert torch.allclose(zoom, full[24:72, 0:48], atol=1e-5)


def test_region_defaults_to_its_own_resolution(stored):
    field, result = stored
    crop = render(field, region=[(4, 12), (10, 30)])
    assert torch.allclose(crop, result.prediction[4:12, 10:30], atol=1e-6)


@pytest.mark.parametrize("text", ["0:8", "0:8,5:5", "a:b,0:1", "0:8,9:2"])
def test_bad_regions(text):
    with pytest.raises(UserError, match="--region"):
        parse_region(text, 2)


@pytest.mark.parametrize("size, message", [([10], "needs 2 numbers"), ([0, 5], "must be positive"),
                                           ([10**6, 10**6], "too large")])
def test_bad_sizes(stored, size, message):
    with pytest.raises(UserError, match=message):
        render(stored[0], size=size)


def test_render_quiet_shows_no_bar(cli, tmp_path):
    """`render --quiet` as `fit --quiet`: the render's bar is left out, the result line stays."""
    status, _, err = cli(["fit", "sample:camera", "--max-size", 12, "--steps", 3, "--hidden-dim", 4, "--device", "cpu",
                          "--quiet", "--out", tmp_path / "f"])
    assert status == 0, err
    shown = cli(["render", tmp_path / "f", "--size", 20, 20, "--out", tmp_path / "a.png"])
    quiet = cli(["render", tmp_path / "f", "--size", 20, 20, "--out", tmp_path / "b.png", "--quiet"])
    assert shown[0] == quiet[0] == 0 and "rendered 20x20" in shown[1] and "rendered 20x20" in quiet[1]
    assert "rendering 20x20" in shown[2] and "rendering" not in quiet[2]
