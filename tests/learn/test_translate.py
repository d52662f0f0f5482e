import pytest
import torch
import torch.nn as nn

from fieldlab._errors import UserError
from fieldlab.learn import points as P
from fieldlab.learn.layers import Discretized
from fieldlab.learn.translate import translate


def _randomize_norms(cnn):
    for m in cnn.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return cnn.eval()


def _run_both(cnn, shape, channels=3, batch=2):
    image = torch.randn(batch, channels, *shape)
    ref = cnn(image)
    pts = P.grid(shape)
    values = image.flatten(2).transpose(1, 2)[:, pts.raster]  # row-major pixels → the grid's point order
    out = translate(cnn, shape)(Discretized(values, pts))  # an eval CNN translates to an eval DI-Net
    if isinstance(out, Discretized):
        out = out.values[:, out.points.grid_order()].transpose(1, 2).reshape(ref.shape)
    return out, ref


class _Block(nn.Module):  # a residual block with squeeze-excitation, as in ResNet/EfficientNet
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.SiLU(),
                                  nn.Conv2d(c, c, 3, padding=2, dilation=2, groups=c))

    def forward(self, x):
        return x + self.body(x)


@pytest.mark.parametrize("shape", [(16, 16), (12, 20), (13, 7)])
def test_translated_cnn_matches_conv2d_on_its_own_grid(shape):
    torch.manual_seed(0)
    cnn = _randomize_norms(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.GELU(),
        nn.MaxPool2d(3, 2, 1), nn.Conv2d(16, 16, 5, padding=2, groups=4), nn.AvgPool2d(3, 1, 1),
        nn.Conv2d(16, 4, 1), nn.Hardswish()))
    out, ref = _run_both(cnn, shape)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 1e-5 * max(1.0, ref.abs().max())


def test_translated_classifier_with_adaptive_pool_head():
    torch.manual_seed(0)
    cnn = _randomize_norms(nn.Sequential(nn.Conv2d(1, 6, 7, stride=2, padding=3), nn.BatchNorm2d(6), nn.ReLU(),
                                         nn.Conv2d(6, 6, 1, stride=2), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                         nn.Linear(24, 5)))
    out, ref = _run_both(cnn, (16, 16), channels=1)
    assert out.shape == (2, 5) and (out - ref).abs().max() < 1e-5


def test_translated_weights_are_the_cnn_weights_and_trainable():
    cnn = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1))
    assert torch.equal(translate(cnn, (8, 8))[0].weight, cnn[0].weight.reshape(3, 2, 9))
    conv = translate(cnn, (8, 8), quadrature="plain")[0]  # DI-Net's Σ w K f: a pixel's area comes out
    pitch_area = (2 / 8) ** 2
    assert torch.allclose(conv.weight * pitch_area, cnn[0].weight.reshape(3, 2, 9))
    assert conv.weight.requires_grad


def test_translated_cnn_runs_on_other_point_sets():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1))
    di = translate(cnn, (16, 16))
    pts = P.qmc(1024, 2)
    out = di(Discretized(torch.sin(3 * pts.coords[None, :, :1]), pts))
    assert out.values.shape == (1, 256, 4) and torch.isfinite(out.values).all()


def test_untranslatable_layers_are_user_errors():
    with pytest.raises(UserError, match="cannot translate"):
        translate(nn.Sequential(nn.Upsample(scale_factor=2)), (8, 8))
    with pytest.raises(UserError, match="sub-grid"):
        translate(nn.Sequential(nn.Conv2d(1, 1, 3, stride=2)), (8, 8))  # no padding: a valid conv
    with pytest.raises(UserError, match="cannot translate"):
        translate(nn.Sequential(_Block(4)), (8, 8))  # a custom residual block is not known


# Truncated torchvision stems: tests/gpu/check_torchvision_stems.py (PyPI's torchvision does not import
# beside the CPU build of torch that CI installs; the device image has both).


def test_the_translation_keeps_the_cnns_mode_and_shapes_are_checked():
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))
    assert translate(cnn.train(), (8, 8)).training and not translate(cnn.eval(), (8, 8)).training
    with pytest.raises(UserError, match="needs values"):
        Discretized(torch.randn(3, 100, 1), P.qmc(256, 2))  # 100 values for 256 points


@pytest.mark.parametrize("name", ["cnn2", "cnn4"])
def test_fieldlabs_own_grid_cnns_translate_exactly_on_their_grid_without_torchvision(name):
    import sys

    from fieldlab.learn.nets import net_config

    torch.manual_seed(0)
    cnn = _randomize_norms(net_config(name, channels=4).build(2, 5))
    pts = P.grid((12, 12))
    x = Discretized(torch.randn(3, len(pts), 2), pts)
    di = translate(cnn, (12, 12))
    assert (di(x) - cnn(x)).abs().max() < 1e-5
    assert "torchvision" not in sys.modules


def _smooth(coords):  # a few plane waves, smooth at 32² (as a fitted digit is at 16²)
    g = torch.Generator().manual_seed(1)
    freq, phase = (torch.rand(12, 2, generator=g) * 2 - 1) * 6, torch.rand(12, generator=g) * 6
    return torch.sin(coords @ freq.T + phase).sum(-1)[None, :, None]


def test_a_translated_conv_on_qmc_points_reads_the_field_its_taps_fall_on():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    pts, pitch = P.qmc(32 * 32, 2), 2 / 32
    reference = torch.zeros(1, len(pts), 4)  # the CNN's filter applied to the field itself at every point
    for i in range(3):
        for j in range(3):
            at = pts.coords + torch.tensor([i - 1.0, j - 1.0]) * pitch
            reference += _smooth(at) * (at.abs() <= 1).all(-1)[None, :, None] * conv.weight[:, 0, i, j].detach()
    x = Discretized(_smooth(pts.coords), pts)
    with torch.no_grad():
        error = {q: float((translate(nn.Sequential(conv), (32, 32), quadrature=q)(x).values - reference).norm()
                          / reference.norm()) for q in ("tap", "plain")}
    assert error["tap"] < 0.1 and error["plain"] > 0.25  # 3% and 35%: the plain sum over one pixel's tent


def test_a_translated_conv_takes_its_corrected_tents_once_per_point_set():
    """No parameter enters a TapConv's basis: one neighbourhood computes it once, and a set of other points
    gets its own."""
    from fieldlab.learn.layers import neighbourhood
    from fieldlab.learn.translate import TapConv

    torch.manual_seed(0)
    net = translate(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1)), (16, 16), quadrature="tap")
    conv = next(m for m in net.modules() if isinstance(m, TapConv))
    outputs = []
    for seed in (1, 2):
        pts = P.qmc(256, 2, scramble=True, seed=seed)
        x = Discretized(_smooth(pts.coords), pts)
        first, second = net(x).values, net(x).values
        found = neighbourhood(pts, pts, conv.support)
        memo = conv._basis(found, pts)
        assert memo is conv._basis(found, pts) and torch.equal(memo, conv._corrected(found, pts))
        assert torch.equal(first, second)
        outputs.append(first)
    assert not torch.allclose(outputs[0], outputs[1])
