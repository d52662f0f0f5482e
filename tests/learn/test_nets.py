import pytest
import torch

from fieldlab._errors import UserError
from fieldlab.learn import points as P
from fieldlab.learn.layers import Discretized
from fieldlab.learn.nets import list_nets, net_config


@pytest.mark.parametrize("name", list_nets())
def test_every_registered_net_runs_forward_backward_and_trains_every_parameter(name):
    torch.manual_seed(0)
    cfg = net_config(name)
    if hasattr(cfg, "backend"):  # the NUFFT nets: the exact transform needs no optional extra
        cfg = net_config(name, backend="exact")
    if hasattr(cfg, "build_for_fields"):  # built from a field architecture (seg_hyper): a field in, a field out
        from fieldlab.fields import make_config

        field = make_config("siren", in_dim=2, out_dim=1, hidden_dim=8, num_layers=2)
        shapes = {k: tuple(v.shape) for k, v in field.build().named_parameters()}
        net = cfg.build_for_fields(field, shapes, None, 5)
        params = {k: 0.3 * torch.randn(4, *s) for k, s in shapes.items()}
        out = net(params, P.qmc(50, 2)).values
        assert out.shape == (4, 50, 5)
    elif cfg.takes == "params":
        net = cfg.build(64, 5)
        out = net({"w": torch.randn(4, 64)})
        assert out.shape == (4, 5)
    else:
        dim = 3 if cfg.task == "field" else 2
        pts = P.grid((8,) * dim) if dim == 2 else P.qmc(512, 3, scramble=True)
        if hasattr(cfg, "for_points"):
            cfg = cfg.for_points(len(pts), dim)
        net = cfg.build(2, 5, dim)
        out = net(Discretized(torch.randn(3, len(pts), 2), pts))
        if cfg.task == "classify":
            assert out.shape == (3, 5)
        else:
            assert isinstance(out, Discretized) and out.values.shape == (3, len(pts), 5)
            out = out.values
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_sdf_net_answers_at_arbitrary_query_points():
    cfg = net_config("sdf").for_points(512, 3)
    net = cfg.build(4, 1, 3)
    pts = P.qmc(512, 3, scramble=True)
    queries = P.uniform(100, 3, seed=3)
    out = net(Discretized(torch.randn(2, 512, 4), pts), queries)
    assert out.values.shape == (2, 100, 1) and out.values.abs().max() <= 1


def test_auto_support_holds_the_requested_number_of_points():
    cfg = net_config("dinet2", neighbours=20).for_points(1024, 2)
    pts = P.qmc(1024, 2)
    inside = ((pts.coords[None] - pts.coords[:200, None]).abs() <= cfg.support).all(-1).sum(1).float()
    assert 14 < inside.mean() < 22  # the interior points see about 20 (borders see fewer)


def test_net_options_are_checked():
    with pytest.raises(UserError, match="unknown network"):
        net_config("vgg")
    with pytest.raises(UserError, match="does not take"):
        net_config("cnn2", support=0.2)
    with pytest.raises(UserError, match="must be one of"):
        net_config("dinet2", shape="hexagon")


@pytest.mark.parametrize("separable", [False, True])
def test_a_separable_dinet_keeps_a_full_first_layer_and_trains_every_parameter(separable):
    from fieldlab.learn.layers import DIConv, SeparableDIConv

    torch.manual_seed(0)
    cfg = net_config("dinet", separable=str(separable).lower(), multiplier="2", channels="8").for_points(64, 2)
    net = cfg.build(3, 5, 2)
    separables = [m for m in net.modules() if isinstance(m, SeparableDIConv)]
    assert len(separables) == (3 if separable else 0)  # the strided conv and the residual block's two
    first = next(m for m in net.modules() if isinstance(m, DIConv))
    assert first.groups == 1 and first.weight.shape[:2] == (8, 3)  # the input's 3 channels: a full kernel
    for m in separables:  # two kernels per channel, mixed by a 1×1
        assert m.depthwise.weight.shape[0] == 2 * m.depthwise.groups == m.pointwise.in_features
    pts = P.qmc(64, 2, scramble=True)
    out = net(Discretized(torch.randn(3, 64, 3), pts))
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    with pytest.raises(UserError, match="multiplier"):
        net_config("dinet", multiplier="0")


def test_the_strided_convolution_reads_down_support_times_the_first_layers_support():
    from fieldlab.learn.layers import DIConv

    for down in (1.0, 2.0):
        cfg = net_config("dinet", down_support=str(down), channels="16").for_points(256, 2)
        convs = [m for m in cfg.build(1, 3, 2).modules() if isinstance(m, DIConv)]
        strided = [m for m in convs if m.stride == 2]
        assert len(strided) == 1 and strided[0].groups == 16  # the separable strided conv's depthwise part
        assert strided[0].support.hi[0] == pytest.approx(down * convs[0].support.hi[0])
    for bad in ("0", "-1", "nan"):
        with pytest.raises(UserError, match="down-support"):
            net_config("dinet", down_support=bad)
