"""functa and spatial functa: modulations and readouts against the papers' formulas (the registry-driven
zoo tests cover forward/backward, sizes, batched == single fits and the field DIR)."""

import pytest
import torch

from fieldlab import UserError
from fieldlab.fields import FieldStack, Siren, make_config
from fieldlab.fields.spatial_functa import binary_code


def _capture(module):
    """Record the SIREN input and the shifts that `forward_shifted` receives."""
    seen = {}
    original = module.siren.forward_shifted

    def spy(x, shifts):
        seen["x"], seen["shifts"] = x, shifts
        return original(x, shifts)

    module.siren.forward_shifted = spy
    return seen


def test_functa_with_zero_latent_is_its_siren():
    field = make_config("functa", in_dim=2, out_dim=3, hidden_dim=16, num_layers=3, latent_dim=8).build()
    with torch.no_grad():
        field.latent.zero_()
    plain = Siren(in_dim=2, out_dim=3, hidden_dim=16, num_layers=3, omega0=30.0, first_omega0=30.0)
    plain.load_state_dict(field.siren.state_dict())
    x = torch.rand(10, 2) * 2 - 1
    assert torch.allclose(field(x), plain(x), atol=1e-6)
    with torch.no_grad():
        field.latent.normal_()
    assert not torch.allclose(field(x), plain(x), atol=1e-3)  # the latent does reach the output


def test_functa_shifts_are_a_linear_map_of_the_latent():
    field = make_config("functa", in_dim=2, out_dim=1, hidden_dim=4, num_layers=2, latent_dim=3).build()
    seen = _capture(field)
    field(torch.zeros(1, 2))
    A, c = field.to_shifts.weight, field.to_shifts.bias
    assert torch.allclose(seen["shifts"], (A @ field.latent + c).reshape(2, 4))


def _spatial(readout, **options):
    config = make_config("spatial_functa", in_dim=2, out_dim=1, hidden_dim=4, num_layers=2, grid_size=4,
                         latent_channels=3, readout=readout, **options).adapt((32, 32))
    return config, config.build()


def test_nearest_readout_takes_the_cell_and_local_coordinates():
    _, field = _spatial("nearest")
    grid = field.shift_grid()  # (M, S, S)
    # Pixel (row 13, col 30) of 32×32: cell (13·4/32, 30·4/32) = (1, 3); local (13.5/8 − 1, 30.5/8 − 3).
    x = torch.tensor([[13.5, 30.5]]) / 32 * 2 - 1
    seen = _capture(field)
    field(x)
    assert torch.allclose(seen["shifts"].reshape(-1), grid[:, 1, 3])
    assert torch.allclose(seen["x"], torch.tensor([[13.5 / 8 - 1, 30.5 / 8 - 3]]), atol=1e-6)


def test_bilinear_readout_blends_cell_centres_and_codes_pixel_indices():
    _, field = _spatial("bilinear")
    grid = field.shift_grid()
    seen = _capture(field)
    # Cell centres of a 4×4 grid over 32 pixels sit at 4, 12, 20, 28; 16 lies halfway between 12 and 20.
    centre = torch.tensor([[12.0, 20.0]]) / 32 * 2 - 1
    field(centre)
    assert torch.allclose(seen["shifts"].reshape(-1), grid[:, 1, 2], atol=1e-6)
    halfway = torch.tensor([[16.0, 20.0]]) / 32 * 2 - 1
    field(halfway)
    assert torch.allclose(seen["shifts"].reshape(-1), (grid[:, 1, 2] + grid[:, 2, 2]) / 2, atol=1e-6)
    # The SIREN's input is the 5 + 5 bits of the pixel index (16, 20), least significant first.
    assert field.siren.layers[0].in_features == 10
    assert seen["x"].tolist() == [[0, 0, 0, 0, 1, 0, 0, 1, 0, 1]]


def test_binary_code():
    assert binary_code(torch.tensor([0, 5, 31]), 5).tolist() == [
        [0, 0, 0, 0, 0], [1, 0, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_bilinear_grid_follows_the_signal():
    config, _ = _spatial("bilinear")
    assert config.resolution == (32, 32)
    assert config.adapt((48, 20)).build().bits == (6, 5)


@pytest.mark.parametrize("options, message", [
    ({"in_dim": 1}, "2-D signals"), ({"in_dim": 3}, "2-D signals"), ({"kernel_size": 2}, "must be odd"),
    ({"readout": "cubic"}, "must be one of"), ({"latent_init": -1.0}, "non-negative"),
])
def test_spatial_functa_refuses_bad_options(options, message):
    with pytest.raises(UserError, match=message):
        make_config("spatial_functa", **{"in_dim": 2, **options})


def test_a_stack_with_shared_weights_evaluates_each_latent():
    config = make_config("functa", in_dim=2, out_dim=1, hidden_dim=8, num_layers=2, latent_dim=4)
    template = config.build()
    shared = {k: v.detach().clone() for k, v in template.named_parameters() if k != "latent"}
    latents = torch.randn(3, 4)
    stack = FieldStack(config.build(), {"latent": latents}, {}, shared=shared)
    x = torch.rand(3, 5, 2) * 2 - 1
    together = stack(x)
    for i in range(3):
        one = stack.field(i)
        assert torch.allclose(one.latent, latents[i])
        assert torch.allclose(together[i], one(x[i]), atol=1e-6)
    # Per-field tensors can be replaced in the call, and gradients reach them.
    replaced = torch.zeros(3, 4, requires_grad=True)
    stack(x, {"latent": replaced}).sum().backward()
    assert replaced.grad is not None and replaced.grad.abs().sum() > 0
    assert len(list(stack.parameters())) == 1 + len(shared)  # shared weights are held once


def test_cli_fits_a_functa_field(cli, tmp_path):
    status, _, err = cli(["fit", "sample:camera", "--field", "spatial_functa", "--max-size", "16", "--steps", "5",
                          "--grid-size", "4", "--readout", "bilinear", "--device", "cpu", "--quiet",
                          "--out", tmp_path / "f"])
    assert status == 0, err
    status, out, _ = cli(["info", tmp_path / "f"])
    assert status == 0 and "spatial_functa" in out
    status, _, err = cli(["fit", "sample:camera", "--field", "functa", "--grid-size", "4", "--out", tmp_path / "g"])
    assert status == 2 and "does not take --grid-size" in err
