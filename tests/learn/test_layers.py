
import dataclasses

import pytest
import torch
import torch.nn as nn

from fieldlab.learn import points as P
from fieldlab.learn._aggregate import pair_sum
from fieldlab.learn import _neighbors
from fieldlab.learn._neighbors import Support, nearest, radius_pairs
from fieldlab.learn.layers import (AdaptivePool, DIConv, DINorm, DIPool, Discretized, MLPKernel, Pointwise,
                                   Residual, TapKernel, Upsample, _WeightedNorm, global_pool, neighbourhood)


def _brute(q, s, support):
    inside = support.contains(s[None] - q[:, None])
    return set(map(tuple, inside.nonzero().tolist()))


@pytest.mark.parametrize("dim,support", [(1, Support.box(0.1, 1)), (2, Support((-0.05, -0.2), (0.15, 0.1))),
                                         (3, Support.sphere(0.25, 3)), (4, Support.box(0.4, 4))])
def test_radius_search_equals_brute_force_in_chunks(dim, support):
    src = P.qmc(700, dim, scramble=True, seed=1).coords
    qry = P.uniform(300, dim, seed=2).coords
    qi, si = radius_pairs(qry, src, support, chunk=37)
    assert (qi.diff() >= 0).all()  # CSR order
    assert set(zip(qi.tolist(), si.tolist())) == _brute(qry, src, support)


@pytest.mark.parametrize("dim,k", [(2, 1), (3, 4)])
def test_nearest_through_the_tree_equals_the_distance_matrix(monkeypatch, dim, k):
    sources, queries = P.uniform(500, dim, seed=4).coords, P.uniform(900, dim, seed=5).coords
    monkeypatch.setattr(_neighbors, "TREE_FROM", 10 ** 12)  # the distance matrix, in chunks
    by_matrix = nearest(queries, sources, k, chunk=128)
    monkeypatch.setattr(_neighbors, "TREE_FROM", 0)  # the k-d tree
    by_tree = nearest(queries, sources, k)
    assert by_tree[1].dtype == torch.long and by_tree[1].shape == (900, k)
    assert torch.equal(by_tree[1], by_matrix[1])  # random points: no ties
    exact = (queries[:, None].double() - sources[by_tree[1]].double()).norm(dim=-1)
    assert torch.allclose(by_tree[0].double(), exact, atol=1e-6)  # the matrix's own rounding is ~1e-5
    assert torch.allclose(by_tree[0], by_matrix[0], atol=1e-4)
    assert bool((by_tree[0].diff(dim=1) >= 0).all())  # nearest first


def test_ball_uses_every_axis():
    # DI-Net's 3-D box ignored z; here a point far away along the last axis is never a neighbour
    src = torch.tensor([[0.0, 0.0, 0.9], [0.0, 0.0, 0.05]])
    qi, si = radius_pairs(torch.zeros(1, 3), src, Support.sphere(0.1, 3))
    assert si.tolist() == [1]


def test_pair_sum_gradients():
    basis = torch.randn(40, 3, dtype=torch.double, requires_grad=True)
    x = torch.randn(2, 9, 4, dtype=torch.double, requires_grad=True)
    qi = torch.randint(0, 6, (40,)).sort().values
    si = torch.randint(0, 9, (40,))
    assert torch.autograd.gradcheck(lambda b, v: pair_sum(b, v, qi, si, 6), (basis, x))
    ref = torch.zeros(6, 3, 2, 4, dtype=torch.double)
    for p in range(40):
        ref[qi[p]] += basis[p, :, None, None] * x[:, si[p]][None]
    assert torch.allclose(pair_sum(basis, x, qi, si, 6), ref)


def _smooth_field(pts, channels=3):
    x = pts.coords
    return torch.stack([torch.sin(2 * x[:, 0] + k) * torch.cos(3 * x[:, 1] - k) for k in range(channels)], -1)[None]


@pytest.mark.parametrize("normalization", ["integral", "mean"])
def test_di_conv_is_stable_between_two_dense_qmc_sets(normalization):
    """The QMC stability check: one layer, one field, two different dense point sets (16,384 Sobol
    points and 16,384 scrambled Halton points), compared at the same 64 query points.
    Stated tolerance: 2% of the largest output (measured: about 0.8%; i.i.d. random sets of the same
    size miss by about 10-20%)."""
    torch.manual_seed(0)
    conv = DIConv(3, 8, Support.box(0.2, 2), normalization=normalization)
    queries = P.qmc(64, 2, scramble=True, seed=5)
    outs = []
    for pts in (P.qmc(16384, 2), P.qmc(16384, 2, sequence="halton", scramble=True, seed=1),
                P.uniform(16384, 2, seed=1)):
        outs.append(conv(Discretized(_smooth_field(pts), pts), out_points=queries).values)
    scale = outs[0].abs().max()
    assert (outs[0] - outs[1]).abs().max() < 0.02 * scale
    assert (outs[0] - outs[2]).abs().max() > 0.02 * scale  # the tolerance is tight enough to matter


def test_weights_make_the_conv_see_the_field_not_the_density():
    torch.manual_seed(0)
    conv = DIConv(3, 4, Support.box(0.3, 2))
    queries = P.grid((4, 4))
    dense = P.qmc(8192, 2)
    ref = conv(Discretized(_smooth_field(dense), dense), out_points=queries).values
    warped = P.shrunk(8192, 2, seed=1)
    out = conv(Discretized(_smooth_field(warped), warped), out_points=queries).values
    assert (out - ref).abs().mean() < 0.1 * ref.abs().mean()


def test_conv_stride_keeps_prefix_and_all_parameters_get_gradients():
    torch.manual_seed(0)
    pts = P.qmc(256, 2)
    conv = DIConv(2, 5, Support.sphere(0.3, 2), stride=2, groups=1)
    out = conv(Discretized(torch.randn(3, 256, 2), pts))
    assert out.values.shape == (3, 64, 5) and torch.equal(out.points.coords, pts.coords[:64])
    out.values.square().sum().backward()
    for name, p in conv.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_norm_matches_batchnorm_on_a_grid_and_keeps_torch_running_semantics():
    pts = P.grid((6, 6))
    x = torch.randn(4, 36, 3) * 2 + 1
    di, bn = DINorm(3, momentum=0.2), nn.BatchNorm2d(3, momentum=0.2)
    image = x.transpose(1, 2).reshape(4, 3, 6, 6)  # the order of points does not matter to BN
    for _ in range(2):
        out = di(Discretized(x, pts)).values
        ref = bn(image).reshape(4, 3, 36).transpose(1, 2)
        assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(di.running_mean, bn.running_mean, atol=1e-6)
    assert torch.allclose(di.running_var, bn.running_var, atol=1e-5)
    di.eval(), bn.eval()
    assert torch.allclose(di(Discretized(x, pts)).values, bn(image).reshape(4, 3, 36).transpose(1, 2), atol=1e-5)


def test_norm_of_bf16_values_keeps_its_statistics_in_fp32():
    pts = P.qmc(64, 2, scramble=True, seed=1)
    # channels first (the layout whose moments are row sums), a mean far above the spread
    values = (torch.randn(3, 64, 4) * 0.01 + 100.0).to(torch.bfloat16).permute(2, 1, 0)
    low, full = DINorm(3, relu=True), DINorm(3, relu=True)
    out = low(Discretized(values, pts)).values
    assert out.dtype == torch.float32
    assert torch.allclose(out, full(Discretized(values.float(), pts)).values)
    assert torch.allclose(low.running_var, full.running_var)


@pytest.mark.parametrize("backward_inside", [False, True])
def test_a_dinet_trains_under_bf16_autocast_with_fp32_norms(backward_inside):
    """As `train --precision bf16` runs it (CPU autocast here): a step forward and backward, with the backward
    inside the autocast region or after it; the norms' running statistics stay fp32 and follow fp32's."""
    from fieldlab.learn.nets import net_config

    pts = P.qmc(64, 2, scramble=True, seed=1)
    x = Discretized(torch.randn(4, 64, 1), pts)
    nets = []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        net = net_config("dinet", channels="16").for_points(64, 2).build(1, 3, 2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 0]))
            if backward_inside:
                loss.backward()
        if not backward_inside:
            loss.backward()
        nets.append(net)
    full, low = nets
    norms = [(a, b) for a, b in zip(full.modules(), low.modules()) if isinstance(a, DINorm)]
    assert len(norms) == 4
    for a, b in norms:
        assert b.running_mean.dtype == b.running_var.dtype == torch.float32
        assert torch.allclose(a.running_var, b.running_var, rtol=0.05, atol=0.01)
        assert b.weight.grad.dtype == torch.float32 and torch.isfinite(b.weight.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in low.parameters())


def test_norm_statistics_are_quadrature_weighted():
    pts = P.shrunk(4096, 2, seed=0)
    x = pts.coords[None, :, :1].expand(2, -1, -1) + 0.5  # mean over the domain: 0.5
    out = DINorm(1, affine=False)(Discretized(x, pts)).values
    assert abs(float((pts.weights[None, :, None] * out).sum() / (2 * pts.volume))) < 1e-4


LAYOUTS = {"bnc": (0, 1, 2), "cnb": (2, 1, 0), "nbc": (1, 0, 2)}  # memory order of the (b, n, c) values


@pytest.mark.parametrize("dims,affine,relu,layout", [((0, 1), True, False, "bnc"), ((1,), True, False, "bnc"),
                                                     ((0, 1), False, False, "bnc"), ((0, 1), True, True, "cnb"),
                                                     ((0, 1), False, True, "cnb"), ((1,), True, True, "cnb"),
                                                     ((0, 1), True, True, "nbc"), ((0, 1), True, False, "cnb")])
def test_weighted_norm_gradients_are_autograds(dims, affine, relu, layout):
    """The norm's hand-written backward (and its ReLU) against numerical gradients, and its values against the
    plain expression autograd would differentiate, for values laid out channels first, points first or as is."""
    torch.manual_seed(0)
    order = LAYOUTS[layout]
    shape = (3, 7, 4)
    v = (torch.randn([shape[i] for i in order], dtype=torch.float64) + 0.7).permute(*[order.index(i) for i in range(3)])
    v.requires_grad_()
    assert v.shape == shape and v.permute(*order).is_contiguous()
    w = torch.rand(7, 1, dtype=torch.float64)
    w = w / w.sum() / (3 if dims == (0, 1) else 1)
    gamma = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_(affine)
    beta = torch.randn(4, dtype=torch.float64, requires_grad=affine)
    params = (gamma, beta) if affine else (None, None)
    assert torch.autograd.gradcheck(lambda v, *p: _WeightedNorm.apply(v, w, *(p or params), 1e-5, dims, relu)[0],
                                    (v, *(params if affine else ())))
    mean = (w * v).sum(dims, keepdim=True)
    plain = (v - mean) / torch.sqrt((w * (v - mean) ** 2).sum(dims, keepdim=True) + 1e-5)
    plain = plain * gamma + beta if affine else plain
    plain = plain.relu() if relu else plain
    out = _WeightedNorm.apply(v, w, *params, 1e-5, dims, relu)[0]
    assert torch.allclose(out, plain, atol=1e-12)
    assert not relu or bool((out == 0).any())  # the ReLU cut something


def test_norm_with_relu_is_the_norm_then_a_relu_in_training_and_eval():
    pts = P.qmc(50, 2, scramble=True, seed=2)
    x = Discretized(torch.randn(3, 4, 50).permute(1, 2, 0), pts)  # channels first, as a separable layer's output
    fused, plain = DINorm(3, relu=True), nn.Sequential(DINorm(3), Pointwise(nn.ReLU()))
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5), fused.bias.uniform_(-0.5, 0.5)
        plain[0].load_state_dict(fused.state_dict())
    for mode in ("train", "eval"):
        getattr(fused, mode)(), getattr(plain, mode)()
        assert torch.allclose(fused(x).values, plain(x).values, atol=1e-6)
    assert torch.allclose(fused.running_var, plain[0].running_var)


@pytest.mark.parametrize("kernel", [MLPKernel(Support.box(0.3, 2), num_basis=5),
                                    MLPKernel(Support.sphere(0.3, 2), num_basis=5, window=False),
                                    TapKernel([(-1, 0, 1), (-1, 0, 1)], (0.1, 0.1))])
def test_kernels_memoize_only_what_their_parameters_do_not_change(kernel):
    pts = P.qmc(128, 2, scramble=True, seed=3)
    support = Support.box(0.3, 2) if isinstance(kernel, TapKernel) else Support.sphere(0.3, 2) if kernel.ball \
        else Support.box(0.3, 2)
    found = neighbourhood(pts, pts, support)
    expected = kernel(found.delta) * found.weights[:, None]
    first = kernel.weighted(found)
    assert torch.allclose(first, expected, atol=1e-6) and len(found.memo) == 1
    if isinstance(kernel, MLPKernel):  # a parameter change reaches the basis; the memo is not rebuilt
        memo = dict(found.memo)
        with torch.no_grad():
            kernel.linear.weight.mul_(1.5)
        moved = kernel.weighted(found)
        assert not torch.allclose(moved, first) and torch.allclose(moved, kernel(found.delta) * found.weights[:, None],
                                                                    atol=1e-6)
        assert all(found.memo[k] is memo[k] for k in memo)
        moved.sum().backward()
        assert kernel.linear.weight.grad is not None and kernel.linear.weight.grad.abs().sum() > 0
    # displacements with a gradient are never memoized
    traced = dataclasses.replace(found, delta=found.delta.clone().requires_grad_(True), memo={})
    assert torch.allclose(kernel.weighted(traced), kernel(found.delta) * found.weights[:, None], atol=1e-6)
    assert traced.memo == {}


def test_pooling_and_heads():
    pts = P.grid((8, 8))
    x = torch.randn(2, 64, 3)
    field = Discretized(x, pts)
    top = DIPool(Support.box(0.3, 2), mode="max", stride=2)(field)
    image = x[:, pts.grid_order()].transpose(1, 2).reshape(2, 3, 8, 8)
    ref = nn.functional.max_pool2d(image, 3, 2, 1)
    assert torch.allclose(top.values[:, top.points.grid_order()].transpose(1, 2).reshape(ref.shape), ref)
    assert torch.allclose(global_pool(field), x.mean(1), atol=1e-6)
    assert torch.allclose(AdaptivePool(2)(field), nn.functional.adaptive_avg_pool2d(image, 2), atol=1e-6)
    avg = DIPool(Support.box(0.3, 2), mode="avg")(field)
    assert torch.allclose(avg.values[:, pts.grid_order()].transpose(1, 2).reshape(2, 3, 8, 8),
                          nn.functional.avg_pool2d(image, 3, 1, 1, count_include_pad=False), atol=1e-5)


def test_upsample_and_pure_residual():
    coarse = P.grid((4, 4))
    fine = P.grid((8, 8))
    x = Discretized(torch.randn(1, 16, 2), coarse)
    up = Upsample()(x, fine)
    assert up.values.shape == (1, 64, 2)
    assert torch.allclose(up.values[:, :16], x.values)  # a coarse grid point is the nearest to itself
    block = Residual(Pointwise(nn.Linear(2, 2)))
    before = x.values.clone()
    y = block(x)
    assert torch.equal(x.values, before)  # the input is not touched: x + f(x), not 2 f(x)
    assert torch.allclose(y.values, x.values + block.body.module(x.values))


def test_mlp_kernel_is_smooth_in_the_displacement():
    k = MLPKernel(Support.box(0.1, 2))
    d = torch.zeros(2, 2)
    d[1, 0] = 1e-4
    phi = k(d)
    assert phi.shape == (2, 17) and (phi[0] - phi[1]).abs().max() < 1e-2
