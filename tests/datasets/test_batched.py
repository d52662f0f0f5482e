"""Independent batched fitting: a field's result depends on (seed, row) only, not on its batch."""

import numpy as np
import pytest
import torch

from fieldlab._errors import UserError
from fieldlab.fields import FieldStack, make_config
from fieldlab.fit.batched import BatchedFitConfig, fit_batch, init_params
from fieldlab.fit.points import distinct_subset as pixel_subset
from fieldlab.signals import grid_coords
from fieldlab.signals.datasets import Augmented, open_source

pytestmark = pytest.mark.usefixtures("one_thread")


CONFIG = make_config("siren", in_dim=2, out_dim=1, hidden_dim=12, num_layers=2)


@pytest.fixture(scope="module")
def digits():
    source = open_source("sample:digits")
    info = source.info()
    return grid_coords(info.domain, info.domain, info.shape), Augmented(source).values(range(24))


def fit(coords, values, rows, **options):
    return fit_batch(CONFIG, coords, values, rows, BatchedFitConfig(device="cpu", **options))


@pytest.mark.parametrize("options", [dict(init="random", sample_fraction=0.5), dict(init="shared")])
def test_batched_fit_equals_fits_alone(digits, options):
    coords, values = digits
    rows = [3, 10, 17]
    together = fit(coords, values[rows], rows, steps=25, target_psnr=0, **options)
    for i, row in enumerate(rows):
        alone = fit(coords, values[[row]], [row], steps=25, target_psnr=0, **options)
        for name, tensor in together.params.items():
            torch.testing.assert_close(tensor[i], alone.params[name][0], rtol=1e-4, atol=1e-5)
        assert together.psnr[i] == pytest.approx(alone.psnr[0], abs=1e-3)


def test_init_shared_or_random():
    shared = init_params(CONFIG, [0, 1, 2], "shared", seed=1)[1]["layers.1.weight"]
    random = init_params(CONFIG, [0, 1, 2], "random", seed=1)[1]["layers.1.weight"]
    assert torch.equal(shared[0], shared[2]) and not torch.equal(random[0], random[2])
    again = init_params(CONFIG, [2], "random", seed=1)[1]["layers.1.weight"]
    assert torch.equal(random[2], again[0])  # a row's draw does not depend on the batch


def test_pixel_subsets_are_distinct_and_per_row():
    rows = torch.tensor([5, 9, 11])
    subset = pixel_subset(rows, step=3, n=64, k=20, seed=0)
    assert subset.shape == (3, 20) and all(len(set(s.tolist())) == 20 for s in subset)
    assert torch.equal(subset[1], pixel_subset(torch.tensor([9]), 3, 64, 20, 0)[0])
    assert not torch.equal(subset[1], pixel_subset(torch.tensor([9]), 4, 64, 20, 0)[0])


def test_early_stop_keeps_the_parameters_at_the_target(digits):
    coords, values = digits
    rows = list(range(8))
    result = fit(coords, values[rows], rows, steps=400, target_psnr=24, check_every=10)
    assert (result.psnr >= 24).all() and result.steps.min() < 400 and len(set(result.steps.tolist())) > 1
    row = int(np.argmin(result.steps))  # refit that one alone, for exactly the steps it took, no target
    alone = fit(coords, values[[row]], [row], steps=int(result.steps[row]), target_psnr=0)
    torch.testing.assert_close(result.params["layers.0.weight"][row], alone.params["layers.0.weight"][0],
                               rtol=1e-4, atol=1e-5)


def test_digits_reach_30_db(digits):
    coords, values = digits
    result = fit_batch(make_config("siren", in_dim=2, out_dim=1, hidden_dim=32, num_layers=2), coords, values,
                       range(24), BatchedFitConfig(device="cpu", steps=150))
    assert result.psnr.mean() > 30 and np.isfinite(result.psnr).all()


def test_bad_options_are_user_errors(digits):
    coords, values = digits
    for options in (dict(steps=0), dict(init="zeros"), dict(sample_fraction=2.0), dict(precision="fp8")):
        with pytest.raises(UserError):
            fit(coords, values[:1], [0], **options)


def test_psnr_is_the_stored_fields_in_fp32_at_every_precision(digits):
    """A bf16 fit records the PSNR its fp32 parameters render at, not that of a bf16 forward pass."""
    coords, values = digits
    rows = [0, 1, 2]
    result = fit(coords, values[rows], rows, steps=40, target_psnr=0, precision="bf16")
    template, _, buffers = init_params(CONFIG, rows, "shared", 0)
    stack = FieldStack(template, {k: v for k, v in result.params.items() if k not in buffers}, buffers)
    with torch.no_grad():
        prediction = stack(coords.expand(len(rows), *coords.shape))
        bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
        with bf16:
            rounded = stack(coords.expand(len(rows), *coords.shape)).float()
    mse = (prediction - values[rows]).square().mean(dim=(1, 2)).double()
    assert result.psnr == pytest.approx((10 * torch.log10(4.0 / mse)).numpy(), abs=1e-4)
    assert not torch.allclose(prediction, rounded)  # a bf16 forward pass would have read another PSNR


def test_a_batch_with_a_diverged_field_is_refused_naming_its_row():
    """`refuse_diverged`: one field whose weights hold a NaN (or whose PSNR is not finite) stops the batch in one
    line naming its row, before anything of it is stored; finite ones pass."""
    from fieldlab.fit.batched import refuse_diverged

    params = {"w": torch.zeros(3, 4, 2), "b": torch.zeros(3, 2)}
    refuse_diverged(params, np.array([30.0, 31.0, 32.0]), [5, 6, 7], 1e-3)
    params["w"][2, 1, 0] = float("nan")
    with pytest.raises(UserError, match=r"the fits of 1 of 3 fields diverged \(rows 7:"):
        refuse_diverged(params, np.array([30.0, 31.0, 32.0]), [5, 6, 7], 1e-3)
    params["w"][2, 1, 0] = 0.0
    with pytest.raises(UserError, match=r"rows 5:"):
        refuse_diverged(params, np.array([np.inf, 31.0, 32.0]), [5, 6, 7], 1e-3)


def test_a_quiet_sound_stops_on_its_snr_not_on_a_psnr_that_reads_its_error_as_small():
    """Two 1-D clips, one at a hundredth of the other's amplitude: PSNR (against the full range) called the quiet
    one done while its error was louder than it; SNR stops each by its own loudness."""
    from fieldlab.fit.batched import PSNR, SNR, stop_measure
    from fieldlab.fit.metrics import field_snrs

    assert stop_measure("audio") is SNR and stop_measure("image") is PSNR
    t = torch.linspace(-1, 1, 64)[:, None]
    loud = 0.5 * torch.sin(6 * t)
    values = torch.stack([loud, 0.01 * torch.sin(6 * t)])  # (2, 64, 1)
    config = make_config("siren", in_dim=1, out_dim=1, hidden_dim=16, num_layers=2, omega0=10.0, first_omega0=10.0)
    fit = BatchedFitConfig(device="cpu", steps=300, check_every=10, target_psnr=40.0, target_snr=30.0)
    by_psnr = fit_batch(config, t, values, [0, 1], fit, measure=PSNR)
    by_snr = fit_batch(config, t, values, [0, 1], fit, measure=SNR)
    assert by_psnr.steps[1] < by_psnr.steps[0]  # the quiet clip "reached" 40 dB first
    assert by_snr.measure == "snr" and by_snr.steps[1] > by_psnr.steps[1]
    stopped = by_snr.steps < 300
    assert (by_snr.quality[stopped] >= 30).all()  # a stopped sound reached its SNR target
    assert field_snrs(values, values).isinf().all() and field_snrs(torch.zeros_like(values), values).tolist() == [0, 0]
