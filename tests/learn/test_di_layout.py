"""DIConv's channel mix as one GEMM on points-first values: the same numbers and gradients as the integral
written out pair by pair, and an output laid out so the next layer reads its rows without a copy."""

import pytest
import torch

from fieldlab.learn import points as P
from fieldlab.learn._neighbors import Support
from fieldlab.learn.layers import DIConv, DINorm, Discretized, Pointwise


def _reference(conv: DIConv, x: Discretized, queries) -> torch.Tensor:
    """Σ_n w_n K(x_n − q) f(x_n) + b over the support, one dense (m, n, h) tensor, no plan, no layout."""
    delta = x.points.coords[None] - queries.coords[:, None]  # (m, n, d)
    inside = conv.support.contains(delta)
    phi = conv.kernel(delta.reshape(-1, delta.shape[-1])).view(len(queries), len(x.points), -1)
    phi = phi * (inside * x.points.weights)[..., None]
    return torch.einsum("mnh,oih,bni->bmo", phi, conv.weight, x.values) + conv.bias


@pytest.mark.parametrize("stride,channels_first", [(1, False), (2, False), (2, True)])
def test_di_conv_forward_and_gradients_equal_the_integral_written_out(stride, channels_first):
    torch.manual_seed(0)
    points = P.qmc(128, 2, scramble=True, seed=3)
    x = Discretized(torch.randn(3, 128, 4, requires_grad=True), points)
    conv = DIConv(4, 5, Support.box(0.3, 2), stride=stride, channels_first=channels_first)
    with torch.no_grad():
        conv.bias.normal_()
    out = conv(x)
    ref = _reference(conv, x, points.downsample(stride))
    assert torch.allclose(out.values, ref, atol=1e-5)
    g = torch.randn_like(ref)
    params = (x.values, conv.weight, conv.kernel.linear.weight)
    for a, b in zip(torch.autograd.grad(out.values, params, g), torch.autograd.grad(ref, params, g)):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_di_conv_output_is_laid_out_points_first_through_norm_and_activation():
    """The next conv reads values as rows (points, batch·channels): a view, not a copy, after conv–norm–ReLU."""
    points = P.grid((8, 8))
    conv = DIConv(1, 6, Support.box(0.3, 2))
    y = Pointwise(torch.nn.ReLU())(DINorm(6)(conv(Discretized(torch.randn(2, 64, 1), points))))
    assert y.values.transpose(0, 1).is_contiguous()


def test_a_channels_first_conv_is_read_by_a_depthwise_layer_without_a_copy():
    """A separable network's full first layer writes channels first, (c, m, b) in memory, through norm and
    activation: the depthwise layer after it reads that as it is."""
    points = P.grid((8, 8))
    conv = DIConv(1, 6, Support.box(0.3, 2), channels_first=True)
    y = Pointwise(torch.nn.ReLU())(DINorm(6)(conv(Discretized(torch.randn(2, 64, 1), points))))
    assert y.values.permute(2, 1, 0).is_contiguous()
