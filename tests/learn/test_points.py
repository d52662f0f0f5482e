import math

import pytest
import torch

from fieldlab._errors import UserError
from fieldlab.learn import points as P


@pytest.mark.parametrize("make", [
    lambda: P.grid((8, 8)), lambda: P.grid((5, 7, 3)), lambda: P.qmc(100, 2),
    lambda: P.qmc(77, 3, sequence="halton", scramble=True, seed=3), lambda: P.uniform(50, 2, seed=1),
    lambda: P.shrunk(128, 2, seed=2), lambda: P.qmc(256, 2).prefix(64),
])
def test_weights_sum_to_volume_and_points_cover_the_domain(make):
    pts = make()
    assert torch.allclose(pts.weights.sum(), torch.tensor(pts.volume), rtol=1e-5)
    assert (pts.coords >= -1).all() and (pts.coords <= 1).all()
    assert (pts.weights > 0).all()


def test_random_points_fill_the_whole_domain_not_one_quadrant():
    pts = P.uniform(4000, 2, seed=0)
    quadrants = torch.unique((pts.coords > 0).long() @ torch.tensor([1, 2]), return_counts=True)[1]
    assert len(quadrants) == 4 and quadrants.min() > 800


def test_grid_matches_signal_sample_centres_and_any_shape():
    from fieldlab.signals._signal import grid_coords

    pts = P.grid((6, 10))
    ref = grid_coords([(0, 6), (0, 10)], [(0, 6), (0, 10)], (6, 10))
    assert torch.allclose(pts.coords[pts.grid_order()], ref)


def test_grid_downsample_is_the_stride_subgrid_and_a_prefix():
    pts = P.grid((12, 8))
    half = pts.downsample(2)
    assert half.shape == (6, 4) and len(half) == 24
    assert torch.equal(half.coords, pts.coords[:24])
    sub = P.grid((12, 8), order="raster").coords.reshape(12, 8, 2)[::2, ::2].reshape(-1, 2)
    assert torch.allclose(half.coords[half.grid_order()], sub)
    assert half.downsample(2).shape == (3, 2)
    assert pts.downsample(2) is half  # cached: neighbour lists computed on it are reused


def test_sobol_and_halton_are_what_they_say():
    sobol = P.qmc(10, 2, sequence="sobol")
    ref = torch.quasirandom.SobolEngine(2).draw(10, dtype=torch.float64) * 2 - 1
    assert torch.allclose(sobol.coords.double(), ref, atol=1e-6)
    halton = P.qmc(10, 2, sequence="halton")
    assert torch.allclose(halton.coords[1], torch.tensor([0.0, -1 / 3]), atol=1e-6)  # bases 2 and 3
    with pytest.raises(UserError):
        P.qmc(10, 2, sequence="niederreiter")


def test_shrunk_weights_correct_the_density():
    pts = P.shrunk(4096, 2, seed=0)
    centre = (pts.coords.abs() < 0.5).all(-1)
    assert centre.float().mean() > 0.45  # DI-Net's warp: half the points in the central quarter
    # ∫ x² + y² over [-1, 1]² = 8/3; the density-corrected estimate finds it, the plain mean does not.
    f = pts.coords.square().sum(-1)
    assert abs(float((pts.weights * f).sum()) - 8 / 3) < 0.05
    assert abs(float(f.mean() * 4) - 8 / 3) > 0.5


def test_sampler_redraws_only_randomized_kinds():
    for kind, fresh in [("grid", False), ("qmc", False), ("rqmc", True), ("random", True), ("shrunk", True)]:
        s = P.PointSampler(kind=kind, n=64, dim=2, seed=1)
        a, b, a2 = s(0), s(1), s(0)
        assert torch.equal(a.coords, a2.coords)
        assert torch.equal(a.coords, b.coords) != fresh
    mixed = P.PointSampler(kind="mixed", n=64, dim=2, mix=("grid", "shrunk"))
    assert {mixed(step).kind for step in range(12)} == {"grid", "shrunk"}
    with pytest.raises(UserError):
        P.PointSampler(kind="grid", n=60, dim=2)
    with pytest.raises(UserError):
        P.PointSampler(kind="hex", n=64)


def test_qmc_prefixes_stay_low_discrepancy():
    # the first quarter of a Sobol set integrates a smooth function better than random points do
    f = lambda x: torch.cos(3 * x[:, 0]) * torch.sin(2 * x[:, 1] + 1)  # noqa: E731
    exact = (2 * math.sin(3) / 3) * ((math.cos(-1) - math.cos(3)) / 2)
    sub = P.qmc(4096, 2).downsample(2)
    assert len(sub) == 1024
    err_qmc = abs(float((sub.weights * f(sub.coords)).sum()) - exact)
    rnd = P.uniform(1024, 2, seed=0)
    err_mc = abs(float((rnd.weights * f(rnd.coords)).sum()) - exact)
    assert err_qmc < 0.01 and err_qmc < err_mc
