"""The fast DI path (neighbourhoods built once per point set, dense or cached-CSR sums) against plain references:
a brute-force search, the per-call `pair_sum`, and layers written out pair by pair."""

import pytest
import torch

from fieldlab.learn import _aggregate, _neighbors
from fieldlab.learn import points as P
from fieldlab.learn._aggregate import PairPlan, pair_sum
from fieldlab.learn._neighbors import Support, radius_pairs
from fieldlab.learn.layers import DIConv, DINorm, DIPool, Discretized, SeparableDIConv, Upsample
from fieldlab.learn.nets import net_config


@pytest.fixture(params=["dense", "sparse", "blocks", "full"])
def path(request, monkeypatch):
    """Run a test once with every sum and search dense, once with every one sparse (CSR, cell hashing), once
    with every sum of a plan that knows its points block by block (blocks of 8 points, whatever their fill),
    once with every neighbourhood keeping all its (query, source) pairs (a GPU's graph-safe search)."""
    dense = request.param != "sparse"
    monkeypatch.setattr(_neighbors, "FULL_PAIRS", {"cpu": 10 ** 9 if request.param == "full" else 0})
    monkeypatch.setattr(_aggregate, "DENSE_FILL", 0.0 if dense else 2.0)
    monkeypatch.setattr(_aggregate, "DENSE_CHANNEL_FILL", 0.0 if dense else 2.0)
    monkeypatch.setattr(_neighbors, "ALL_PAIRS", {"cpu": 10 ** 9 if dense else 0})
    blocks = request.param == "blocks"
    monkeypatch.setattr(_aggregate, "BLOCKS", blocks)
    if blocks:
        monkeypatch.setattr(_aggregate, "BLOCK", 8)
        monkeypatch.setattr(_aggregate, "BLOCK_GAIN", 0.0)
        monkeypatch.setattr(_aggregate, "BLOCK_FILL", 0.0)
    return request.param


def _pairs(m=30, n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    qi = torch.randint(0, m, (200,), generator=g).sort().values
    si = torch.randint(0, n, (200,), generator=g)
    keep = torch.unique(qi * n + si)  # no pair twice, sorted by query
    return keep // n, keep % n


@pytest.mark.parametrize("support", [Support((-0.05, -0.2), (0.15, 0.1)), Support.sphere(0.3, 2)])
def test_both_searches_find_the_same_pairs_in_query_order(support, path):
    src = P.qmc(200, 2, scramble=True, seed=1).coords
    qry = P.uniform(90, 2, seed=2).coords
    qi, si = radius_pairs(qry, src, support, chunk=17)
    assert (qi.diff() >= 0).all()
    inside = support.contains(src[None] - qry[:, None])
    assert set(zip(qi.tolist(), si.tolist())) == set(map(tuple, inside.nonzero().tolist()))


def test_a_plan_sums_and_differentiates_like_the_plain_pair_sum(path):
    qi, si = _pairs()
    basis = torch.randn(len(qi), 5, dtype=torch.double, requires_grad=True)
    x = torch.randn(3, 50, 4, dtype=torch.double, requires_grad=True)
    _sums_like_pair_sum(PairPlan(qi, si, 30, 50), basis, x)


def _sums_like_pair_sum(plan, basis, x):
    """The plan's sum and its gradients equal the plain pair sum's, twice (the second call reuses what the
    plan cached)."""
    for _ in range(2):
        fast, plain = plan.sum(basis, x), pair_sum(basis, x, plan.qi, plan.si, plan.m)
        assert torch.allclose(fast, plain)
        g = torch.randn_like(fast)
        assert all(torch.allclose(a, b) for a, b in zip(torch.autograd.grad(fast, (basis, x), g),
                                                          torch.autograd.grad(plain, (basis, x), g)))


def test_a_plan_sums_channel_by_channel_like_the_pair_sum_written_out(path):
    """The depthwise sum (a kernel per channel and pair, channels first) and its gradients equal a gather and
    segment sum, twice (the second call reuses what the plan cached), with and without the kernel's factors
    (A φᵀ: the sparse backward then makes the kernel in source order from them)."""
    qi, si = _pairs()
    if path == "full":  # a full plan's pairs are every (query, source) pair in query-major order
        qi, si = torch.arange(30).repeat_interleave(50), torch.arange(50).repeat(30)
    plan = PairPlan(qi, si, 30, 50, full=path == "full")
    weight = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    basis = torch.randn(len(qi), 5, dtype=torch.double)
    x = torch.randn(4, 50, 3, dtype=torch.double, requires_grad=True)
    for factors in (None, (weight, basis), None):
        kernel = weight @ basis.t()
        fast = plan.sum_channels(kernel, x, factors)
        plain = torch.zeros(4, 30, 3, dtype=torch.double).index_add(1, qi, x[:, si] * kernel[..., None])
        assert fast.shape == (4, 30, 3) and torch.allclose(fast, plain)
        g = torch.randn_like(fast)
        assert all(torch.allclose(a, b) for a, b in zip(torch.autograd.grad(fast, (weight, x), g, retain_graph=True),
                                                          torch.autograd.grad(plain, (weight, x), g)))


@pytest.mark.parametrize("columns", [1, 2, 5, 7, 8, 9])
def test_the_sparse_kernel_gradient_is_the_pairs_dot_products_at_any_column_count(columns):
    """The kernel's gradient on the sparse path, <g[q_p], x[s_p]> per pair, at every column count: CPU products
    of 2 to 7 columns are padded with zero columns (`_aggregate.SAMPLED_MIN_COLUMNS`), others taken as they are."""
    qi, si = _pairs()
    layout = _aggregate._Stacked(qi, si, 30, 50, 1)
    kernel = torch.randn(len(qi), 1, requires_grad=True)
    rows = torch.randn(50, columns)
    out = _aggregate._PairSum.apply(kernel, rows, layout, 30, None)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, kernel, g)
    expected = (g[qi, 0] * rows[si]).sum(-1, keepdim=True)
    assert grad.shape == kernel.shape and torch.allclose(grad, expected, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 3])
def test_a_plan_that_knows_its_points_sums_block_by_block_like_the_plain_pair_sum(stride, monkeypatch):
    monkeypatch.setattr(_aggregate, "BLOCK", 8)
    monkeypatch.setattr(_aggregate, "BLOCK_GAIN", 0.0)
    sources = P.qmc(130, 2, scramble=True, seed=3).coords.double()  # not a multiple of a block: padded
    queries = sources[::stride]
    qi, si = radius_pairs(queries, sources, Support.sphere(0.3, 2))
    basis = torch.randn(len(qi), 5, dtype=torch.double, requires_grad=True)
    x = torch.randn(3, 130, 4, dtype=torch.double, requires_grad=True)
    plan = PairPlan(qi, si, len(queries), 130, query_coords=queries, source_coords=sources)
    assert plan.blocks is not None and plan.blocks.cells < len(queries) * 130  # fewer cells than the matrix
    _sums_like_pair_sum(plan, basis, x)


def test_a_32_grid_sums_block_by_block():
    """Defaults, CPU: a 32×32 grid's neighbourhoods fill a few % of its (queries × sources) matrix, and its
    blocks multiply far fewer cells than the matrix (the reason for the block sum: BENCHMARKS.md)."""
    from fieldlab.learn.layers import neighbourhood

    points = P.grid((32, 32))
    found = neighbourhood(points, points, Support.sphere(0.15, 2))
    assert found.plan.blocks is not None
    assert found.plan.blocks.cells <= 0.25 * len(points) ** 2


def _setting(seed=0, channels=3):
    torch.manual_seed(seed)
    points = P.qmc(96, 2, scramble=True, seed=seed)
    return points, Discretized(torch.randn(2, len(points), channels), points)


def _inside(support, queries, points):
    return support.contains(points.coords[None] - queries.coords[:, None])  # (m, n)


@pytest.mark.parametrize("normalization,groups,stride", [("integral", 1, 1), ("mean", 1, 2), ("integral", 3, 1),
                                                          ("mean", 3, 2)])
def test_di_conv_equals_its_integral_written_out_pair_by_pair(normalization, groups, stride, path):
    points, x = _setting(channels=3)
    conv = DIConv(3, 6, Support.box(0.3, 2), normalization=normalization, stride=stride, groups=groups)
    with torch.no_grad():
        conv.bias.normal_()
    queries = points.downsample(stride)
    inside = _inside(conv.support, queries, points)
    delta = points.coords[None] - queries.coords[:, None]  # (m, n, d)
    phi = conv.kernel(delta.reshape(-1, 2)).view(len(queries), len(points), -1) * inside[..., None]
    phi = phi * points.weights[None, :, None]  # (m, n, h)
    c, o = 3 // groups, 6 // groups
    ref = torch.cat([torch.einsum("mnh,oih,bni->bmo", phi, conv.weight[k * o:(k + 1) * o], x.values[..., k * c:(k + 1) * c])
                     for k in range(groups)], -1)
    if normalization == "mean":
        ref = ref / (inside * points.weights).sum(1)[None, :, None]
    out = conv(x)
    assert out.points is queries
    assert torch.allclose(out.values, ref + conv.bias, atol=1e-5)


@pytest.mark.parametrize("normalization,stride,multiplier", [("integral", 1, 1), ("mean", 2, 3)])
def test_a_separable_conv_is_a_depthwise_integral_then_a_channel_mix(normalization, stride, multiplier, path):
    points, x = _setting(channels=4)
    conv = SeparableDIConv(4, 6, Support.box(0.3, 2), normalization=normalization, stride=stride,
                           multiplier=multiplier)
    queries = points.downsample(stride)
    inside = _inside(conv.depthwise.support, queries, points)
    delta = (points.coords[None] - queries.coords[:, None]).reshape(-1, 2)
    phi = conv.depthwise.kernel(delta).view(len(queries), len(points), -1) * inside[..., None]
    kernel = torch.einsum("mnh,ch->mnc", phi * points.weights[None, :, None], conv.depthwise.weight[:, 0])
    ref = torch.einsum("mnc,bnc->bmc", kernel, x.values.repeat_interleave(multiplier, -1))  # kernel i·M + j reads i
    if normalization == "mean":
        ref = ref / (inside * points.weights).sum(1)[None, :, None]
    out = conv(x)
    assert out.points is queries
    assert torch.allclose(out.values, conv.pointwise(ref), atol=1e-5)
    # channels first throughout: the next depthwise layer and the mix read the values without a copy
    assert out.values.permute(2, 1, 0).is_contiguous()
    after = SeparableDIConv(6, 3, Support.box(0.4, 2), normalization=normalization)
    assert torch.allclose(after(out).values, after(Discretized(out.values.contiguous(), out.points)).values, atol=1e-5)


@pytest.mark.parametrize("mode,normalization", [("avg", "mean"), ("avg", "integral"), ("max", "mean")])
def test_di_pool_equals_its_sum_written_out(mode, normalization, path):
    points, x = _setting(1)
    pool = DIPool(Support.box(0.25, 2), mode=mode, stride=2, normalization=normalization)
    queries = points.downsample(2)
    inside = _inside(pool.support, queries, points)  # (m, n)
    if mode == "max":
        ref = x.values[:, None].masked_fill(~inside[None, :, :, None], -torch.inf).amax(2)
    else:
        w = inside * points.weights
        ref = torch.einsum("mn,bnc->bmc", w, x.values)
        ref = ref / (w.sum(1)[None, :, None] if normalization == "mean" else pool.volume)
    assert torch.allclose(pool(x).values, ref, atol=1e-5)


def test_di_norm_uses_quadrature_weighted_batch_moments():
    points, x = _setting(2)
    norm = DINorm(3)
    w = (points.weights / points.weights.sum())[None, :, None]
    mean = (w * x.values).sum((0, 1)) / 2
    var = (w * (x.values - mean).square()).sum((0, 1)) / 2
    assert torch.allclose(norm(x).values, (x.values - mean) / torch.sqrt(var + 1e-5), atol=1e-5)


def test_upsample_takes_the_nearest_points_values():
    points, x = _setting(3)
    fine = P.grid((12, 12))
    nearest = torch.cdist(fine.coords, points.coords).argmin(1)
    assert torch.equal(Upsample(k=1)(x, fine).values, x.values[:, nearest])


def test_a_fixed_point_set_is_searched_once_for_every_layer_batch_and_step(monkeypatch):
    calls = []
    search = _neighbors.radius_pairs

    def counted(*args, **kwargs):
        calls.append(1)
        return search(*args, **kwargs)

    monkeypatch.setattr("fieldlab.learn.layers.radius_pairs", counted)
    net = net_config("dinet").for_points(64, 2).build(1, 4, 2)
    points = P.grid((8, 8))
    for batch in (2, 5):
        net(Discretized(torch.randn(batch, 64, 1), points)).sum().backward()
    # three supports meet: first layer; strided layer into the sub-grid; the residual block's two convs share one
    assert len(calls) == 3


@pytest.mark.parametrize("separable", [False, True])
def test_a_dinet_step_is_the_same_on_both_paths(separable, monkeypatch):
    """The whole network on the fast dense path and on the sparse path, forward and gradients."""
    points = P.qmc(128, 2, scramble=True, seed=4)
    x = Discretized(torch.randn(3, 128, 1), points)

    def run(dense: bool, full: bool = False):
        monkeypatch.setattr(_aggregate, "DENSE_FILL", 0.0 if dense else 2.0)
        monkeypatch.setattr(_aggregate, "DENSE_CHANNEL_FILL", 0.0 if dense else 2.0)
        monkeypatch.setattr(_neighbors, "FULL_PAIRS", {"cpu": 10 ** 9 if full else 0})
        points.cache.clear()
        torch.manual_seed(0)
        net = net_config("dinet", channels=8 if separable else 4, separable=separable).for_points(128, 2).build(1, 3, 2)
        out = net(x)
        out.sum().backward()
        return out, [p.grad for p in net.parameters()]

    (a, ga), (b, gb), (c, gc) = run(True), run(False), run(False, full=True)
    for out, grads in ((b, gb), (c, gc)):
        assert torch.allclose(a, out, atol=1e-4)
        assert all(torch.allclose(u, v, atol=1e-3, rtol=1e-3) for u, v in zip(ga, grads))


def test_every_pair_kept_weighs_those_outside_the_support_zero(monkeypatch):
    """A neighbourhood that keeps all pairs (as on a GPU, `FULL_PAIRS`) has m·n of them in query-major order;
    its weights and mass are those of the pairs inside, zero elsewhere, and its plan sums without a scatter."""
    from fieldlab.learn.layers import neighbourhood

    monkeypatch.setattr(_neighbors, "FULL_PAIRS", {"cpu": 10 ** 9})
    points, queries = P.qmc(40, 2, scramble=True, seed=3), P.uniform(7, 2, seed=5)
    support = Support.box(0.3, 2)
    found = neighbourhood(queries, points, support)
    inside = _inside(support, queries, points)
    assert found.plan.full and len(found.qi) == 7 * 40
    assert torch.equal(found.inside.view(7, 40), inside)
    assert torch.equal(found.weights.view(7, 40), inside * points.weights)
    assert torch.allclose(found.mass, (inside * points.weights).sum(1))
