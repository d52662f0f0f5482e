"""Mini-batch draws and per-field PSNR: one module each, shared by every path."""

import math

import pytest
import torch

from fieldlab.fit.metrics import field_psnrs, psnr_from_mse
from fieldlab.fit.points import generator, step_points, step_generator, subset_size, with_replacement


def test_a_step_that_covers_every_point_draws_nothing_and_leaves_the_generator_alone():
    g = generator(3)
    before = g.get_state()
    assert step_points(10, 10, g) is None and step_points(10, 0, g) is None and step_points(10, 40, g) is None
    assert torch.equal(g.get_state(), before)
    assert torch.equal(step_points(10, 4, g), torch.randint(10, (4,), generator=torch.Generator().manual_seed(3)))


def test_the_learn_loops_draw_from_a_generator_of_the_step_alone():
    a = with_replacement(100, 8, step_generator(2, 7))
    assert torch.equal(a, torch.randint(100, (8,), generator=torch.Generator().manual_seed(2 * 1_000_003 + 7)))


def test_a_dataset_subset_takes_at_least_one_sample():
    assert subset_size(0.0, 64) == 64 and subset_size(0.25, 64) == 16 and subset_size(0.001, 64) == 1


def test_field_psnrs_are_psnr_from_mse_per_field_and_finite_for_an_exact_fit():
    mse = torch.tensor([0.04, 1e-3, 0.0])
    psnr = field_psnrs(mse)
    assert psnr.dtype == torch.float64 and math.isfinite(psnr[2])
    assert [float(p) for p in psnr[:2]] == pytest.approx([psnr_from_mse(float(m)) for m in mse.double()[:2]],
                                                         rel=1e-15)
