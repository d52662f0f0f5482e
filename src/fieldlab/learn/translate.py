"""Translate a trained 2-D CNN into a DI network that keeps its weights.

Each k×k `Conv2d` becomes a `TapConv`: a `DIConv` with a `TapKernel` whose taps sit at the conv's offsets
(j·dilation − padding) times the pixel pitch of the grid it was trained on, and whose weights are the
conv's (`quadrature="plain"`: DI-Net's `DIConv`, weights divided by one pixel's area). On that grid — coarse-to-fine
ordered, so a stride-s conv keeps the sub-grid a CNN keeps — the translated network reproduces the CNN
(tested to 1e-5); on any other point set each tap reads a tent-weighted local mean of the field around it
(`TapConv`), so the CNN's filters see the field they were trained on whatever the points.

Carried over: Conv2d (groups, dilation, stride), BatchNorm2d, LayerNorm / LayerNorm2d, elementwise
activations, Dropout, Max/AvgPool2d, AdaptiveAvgPool2d (the hand-off to a plain head), Sequential,
fieldlab's own grid CNNs (`cnn2`, `cnn4`: a `GridCNN` becomes a `DIClassifier`), torchvision's ResNet
BasicBlock/Bottleneck, SqueezeExcitation, MBConv/FusedMBConv (EfficientNet) and CNBlock (ConvNeXt).
torchvision is only needed to build those models (`fieldlab[learn]`), never to translate.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn

from fieldlab._errors import UserError, missing_extra
from fieldlab.learn._neighbors import Support
from fieldlab.learn.layers import (AdaptivePool, DIConv, DINorm, DIPool, Discretized, Pointwise, Residual,
                                   TapKernel, global_pool)
from fieldlab.learn.nets import DIClassifier, GridCNN, _ResBlock
from fieldlab.learn.points import PointSet

Quadrature = Literal["tap", "plain"]

ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
               nn.LeakyReLU, nn.ELU, nn.Mish, nn.Identity, nn.Dropout)


@dataclasses.dataclass(frozen=True)
class _Grid:
    """The grid a module sees: its sample counts and pixel pitch in canonical units, and how its
    convolutions sum over other point sets."""

    shape: tuple[int, int]
    pitch: tuple[float, float]
    quadrature: Quadrature = "tap"

    @property
    def cell_weight(self) -> float:
        """The quadrature weight of one point of this grid (the pixel area when the sizes divide evenly)."""
        return 4.0 / (self.shape[0] * self.shape[1])

    def strided(self, stride: tuple[int, int]) -> _Grid:
        return _Grid(tuple(-(-n // s) for n, s in zip(self.shape, stride)),
                     tuple(p * s for p, s in zip(self.pitch, stride)), self.quadrature)


def translate(cnn: nn.Module, input_shape: tuple[int, int], *, quadrature: Quadrature = "tap") -> nn.Module:
    """A DI network equal to `cnn` on the `input_shape` grid (`points.grid(input_shape)`), in `cnn`'s mode
    (train or eval: an eval CNN gives an eval DI-Net, whose normalization uses the CNN's running statistics).

    The result takes a `Discretized` and returns what the CNN's last module returns: a `Discretized`
    for a feature extractor, or a tensor once an adaptive pool (or a grid CNN's mean) hands over to a
    plain head. `quadrature="plain"` gives DI-Net's plain sum Σ w K f in every convolution instead of
    `TapConv`'s per-tap correction: the same on the grid, far from the CNN on other points.
    """
    if quadrature not in ("tap", "plain"):
        raise UserError(f"quadrature must be tap or plain, got {quadrature!r}")
    grid = _Grid(tuple(input_shape), tuple(2.0 / n for n in input_shape), quadrature)
    module, _ = _translate(copy.deepcopy(cnn).eval(), grid)
    return module.train(cnn.training)  # in training mode, normalization uses (and updates) batch statistics


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _translate(m: nn.Module, grid: _Grid):
    name = type(m).__name__
    if isinstance(m, nn.Sequential) and name not in ("SqueezeExcitation",):
        out, tensor_head = [], False
        for child in m:
            if tensor_head:  # after an adaptive pool the head is an ordinary network
                out.append(child)
                continue
            mapped, grid = _translate(child, grid)
            out.append(mapped)
            tensor_head = isinstance(mapped, AdaptivePool)
        return nn.Sequential(*out), grid
    if isinstance(m, GridCNN):  # fieldlab's cnn2 / cnn4: the mean over the feature map becomes ∫ f / |Ω|
        encoder, out_grid = _translate(m.layers, grid)
        return DIClassifier(encoder, PooledHead(m.head)), out_grid
    if isinstance(m, _ResBlock):
        return Residual(_translate(m.body, grid)[0], post=Pointwise(nn.ReLU())), grid
    if isinstance(m, nn.Conv2d):
        return _conv(m, grid)
    if isinstance(m, nn.BatchNorm2d):
        return _batch_norm(m), grid
    if isinstance(m, nn.LayerNorm):  # includes torchvision's LayerNorm2d: both normalize channels
        norm = nn.LayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine)
        norm.load_state_dict(m.state_dict())
        return Pointwise(norm), grid
    if isinstance(m, (nn.Linear,) + ELEMENTWISE) or name == "StochasticDepth":
        return Pointwise(m), grid
    if name == "Permute":  # ConvNeXt's channel-last switch: DI values are always channel-last
        return nn.Identity(), grid
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return _pool(m, grid)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return AdaptivePool(_pair(m.output_size)), grid
    if name in ("BasicBlock", "Bottleneck"):
        return _resnet_block(m, grid)
    if name == "SqueezeExcitation":
        return SqueezeExcite(m), grid
    if name in ("MBConv", "FusedMBConv"):
        body, out_grid = _translate(m.block, grid)
        if m.use_res_connect:
            return Residual(nn.Sequential(body, Pointwise(m.stochastic_depth))), out_grid
        return body, out_grid
    if name == "CNBlock":
        body, out_grid = _translate(m.block, grid)
        scale = LayerScale(m.layer_scale.detach().reshape(-1).clone())
        return Residual(nn.Sequential(body, scale, Pointwise(m.stochastic_depth))), out_grid
    raise UserError(f"cannot translate a {name} into a DI layer")


def _conv(m: nn.Conv2d, grid: _Grid):
    if m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "same":
        raise UserError(f"only zero-padded convolutions translate, got padding={m.padding!r}")
    k, stride, dil = _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
    pad = tuple((d * (kk - 1)) // 2 for d, kk in zip(dil, k)) if m.padding == "same" else _pair(m.padding)
    for n, kk, s, p, d in zip(grid.shape, k, stride, pad, dil):
        expected = (n + 2 * p - d * (kk - 1) - 1) // s + 1
        if expected != -(-n // s):  # the DI layer keeps every s-th point: sizes must agree
            raise UserError(f"a {k} conv with stride {stride} and padding {pad} on {grid.shape} keeps "
                            f"{expected} samples per axis, not the stride sub-grid; it cannot be translated")
    if stride[0] != stride[1]:
        raise UserError(f"only equal strides per axis translate, got {stride}")
    offsets = [[j * d - p for j in range(kk)] for kk, p, d in zip(k, pad, dil)]
    area = grid.cell_weight
    kernel = TapKernel(offsets, grid.pitch)
    options = dict(kernel=kernel, normalization="integral", stride=stride[0], groups=m.groups, bias=m.bias is not None)
    if grid.quadrature == "tap":
        options["cell"] = area
    conv = (TapConv if grid.quadrature == "tap" else DIConv)(
        m.in_channels, m.out_channels, TapKernel.support(offsets, grid.pitch), **options)
    with torch.no_grad():
        conv.weight.copy_(m.weight.reshape(m.out_channels, m.in_channels // m.groups, -1) / (
            1.0 if grid.quadrature == "tap" else area))
        if m.bias is not None:
            conv.bias.copy_(m.bias)
    return conv, grid.strided(stride)


def _batch_norm(m: nn.BatchNorm2d) -> DINorm:
    norm = DINorm(m.num_features, mode="batch", eps=m.eps, momentum=m.momentum if m.momentum is not None else 0.1,
                  affine=m.affine, track_running_stats=m.track_running_stats)
    norm.load_state_dict(m.state_dict(), strict=False)  # num_batches_tracked has no counterpart
    return norm


def _pool(m, grid: _Grid):
    k, stride, pad = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
    if getattr(m, "dilation", 1) not in (1, (1, 1)) or m.ceil_mode:
        raise UserError("pooling with dilation or ceil_mode does not translate")
    if stride[0] != stride[1]:
        raise UserError(f"only equal strides per axis translate, got {stride}")
    for n, kk, s, p in zip(grid.shape, k, stride, pad):
        if (n + 2 * p - kk) // s + 1 != -(-n // s):
            raise UserError(f"a {k} pool with stride {stride} on {grid.shape} does not keep the stride sub-grid")
    # Half a pixel of margin on each side: the box holds exactly the k taps of the pooling window.
    support = Support(tuple((-p - 0.5) * h for p, h in zip(pad, grid.pitch)),
                      tuple((kk - 1 - p + 0.5) * h for kk, p, h in zip(k, pad, grid.pitch)))
    if isinstance(m, nn.MaxPool2d):
        return DIPool(support, mode="max", stride=stride[0]), grid.strided(stride)
    if m.divisor_override is not None:
        raise UserError("AvgPool2d with divisor_override does not translate")
    normalization = "integral" if m.count_include_pad else "mean"
    return (DIPool(support, mode="avg", stride=stride[0], normalization=normalization,
                   volume=k[0] * k[1] * grid.cell_weight), grid.strided(stride))


def _resnet_block(m, grid: _Grid):
    parts = [m.conv1, m.bn1, m.relu, m.conv2, m.bn2]
    if hasattr(m, "conv3"):
        parts += [m.relu, m.conv3, m.bn3]
    body, out_grid = _translate(nn.Sequential(*parts), grid)
    shortcut = _translate(m.downsample, grid)[0] if m.downsample is not None else None
    return Residual(body, shortcut, post=Pointwise(nn.ReLU())), out_grid


class TapConv(DIConv):
    """A translated Conv2d: a `DIConv` on a `TapKernel` whose quadrature is corrected tap by tap.

    The plain sum Σ_x w_x φ_t(x − q) f(x) estimates ∫ φ_t(δ) f(q + δ) dδ from the few points a tent of one
    pixel holds (about four on a QMC set of the CNN's count), so its error is of the size of the value
    itself. Here each tap's sum is divided by the same quadrature of the tent alone, Σ_x w_x φ_t(x − q) (and
    is zero where the tap falls outside [-1, 1]^2, the CNN's zero padding): the tap reads a tent-weighted
    local mean of f around it, and `weight` (out, in/groups, taps) is the Conv2d's own, so fine-tuning moves
    it at the CNN's scale. On the CNN's grid a tent holds exactly its own point: the layer is the conv there.
    """

    def __init__(self, *args, cell: float, **options):
        super().__init__(*args, **options)
        self.cell = cell  # a pixel's quadrature weight on the CNN's grid: what a tent holds there

    def _basis(self, found, queries: PointSet) -> torch.Tensor:
        """DIConv's basis with each tap's sum divided by the quadrature of its tent (the rest of the layer,
        its cached neighbourhood and fast sums included, is DIConv's). No parameter enters it, so it is taken
        once per neighbourhood, as the tents are (`Neighbourhood.once`)."""
        return found.once(("tap-conv", self.kernel.key, self.cell), lambda: self._corrected(found, queries))

    def _corrected(self, found, queries: PointSet) -> torch.Tensor:
        basis = super()._basis(found, queries)  # (p, h)
        mass = basis.new_zeros(len(queries), basis.shape[1]).index_add_(0, found.qi, basis)
        return basis * self._tap_scale(queries.coords, mass)[found.qi]

    def _tap_scale(self, queries: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
        """(m, h) 1 / quadrature of each tap's tent; 0 for taps outside the domain or with no points."""
        pitch = self.kernel.pitch
        centres = queries[:, None, :] + self.kernel.taps * pitch  # (m, h, d)
        tol = 1e-4 * pitch
        inside = ((centres >= -1 - tol) & (centres <= 1 + tol)).all(-1)
        seen = inside & (mass > 1e-6 * self.cell)  # a tent no point falls in reads nothing, as padding does
        return torch.where(seen, 1 / mass.clamp_min(1e-12), torch.zeros_like(mass))


class PooledHead(nn.Module):
    """A grid CNN's head on the quadrature-weighted mean of the features (∫ f / |Ω|, its mean over pixels)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, x: Discretized) -> torch.Tensor:
        return self.head(global_pool(x, "avg"))


class SqueezeExcite(nn.Module):
    """x · σ(fc2(act(fc1(∫ x / |Ω|)))): torchvision's SqueezeExcitation with a quadrature-weighted squeeze."""

    def __init__(self, se: nn.Module):
        super().__init__()
        self.fc1, self.fc2 = _as_linear(se.fc1), _as_linear(se.fc2)
        self.activation, self.scale_activation = se.activation, se.scale_activation

    def forward(self, x: Discretized) -> Discretized:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(global_pool(x)))))  # (b, c)
        return x.with_values(x.values * scale[:, None, :])


class LayerScale(nn.Module):
    """Per-channel scale (ConvNeXt's layer scale)."""

    def __init__(self, gamma: torch.Tensor):
        super().__init__()
        self.gamma = nn.Parameter(gamma)

    def forward(self, x: Discretized) -> Discretized:
        return x.with_values(x.values * self.gamma)


def _as_linear(conv: nn.Conv2d) -> nn.Linear:
    linear = nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.reshape(conv.out_channels, conv.in_channels))
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
    return linear


# -- a DI-Net started from a trained grid CNN (`fieldlab train STORE --net dinet --init-from RUN`) ----------
TWINS = {"cnn2": "dinet2", "cnn4": "dinet4"}
"""The DI-Net each of fieldlab's grid CNNs translates into, layer for layer."""


def init_record(run: str | Path, net: str, options: dict, store, classes: int) -> tuple[str, dict]:
    """(the DI-Net's name, the `init` entry of run.json) for `train --net NET --init-from RUN`, after checking
    that RUN is a finished grid CNN run of these signals (labels, channels) and `options` agree with it."""
    from fieldlab.learn._run_files import check_run_info, read_run_json
    from fieldlab.learn.nets import net_config
    from fieldlab.learn.train import FORMAT, load_run

    where = f"--init-from {run}"
    if not Path(run).is_dir():
        raise UserError(f"{where}: no such run folder (give a folder written by `fieldlab train --net cnn4`)")
    info = read_run_json(Path(run))
    if info.get("format") != FORMAT:
        raise UserError(f"{where}: not a classifier run of `fieldlab train`")
    check_run_info(info, Path(run))
    if info["net"] not in TWINS:
        raise UserError(f"{where}: its {info['net']} network has no DI twin; runs of {', '.join(TWINS)} translate")
    twin = TWINS[info["net"]]
    if net not in ("dinet", twin):
        raise UserError(f"{where}: a {info['net']} run translates into --net {twin} (or dinet), not --net {net}")
    cnn_options = net_config(info["net"], **info["net_options"]).to_dict()
    for key, value in options.items():
        if key != "channels":
            raise UserError(f"{where}: --{key.replace('_', '-')} does not apply to a translated CNN, whose "
                            f"kernels are its 3×3 filters")
        if int(value) != cnn_options["channels"]:
            raise UserError(f"{where}: --channels {value} differs from the run's {cnn_options['channels']}")
    load_run(run, store)  # refuses a store of other signals (channels, labels) in one line
    if info["classes"] != classes:
        raise UserError(f"{where}: the run predicts {info['classes']} classes; {store.path} has {classes}")
    grid = _training_grid(info, where)
    return twin, {"run": str(run), "net": info["net"], "net_options": cnn_options, "grid": list(grid),
                  "quadrature": "tap", "test_accuracy": info.get("metrics", {}).get("test_accuracy")}


def _training_grid(info: dict, where: str) -> tuple[int, int]:
    from fieldlab.learn.points import PointSampler

    if info.get("dim", 2) != 2 or info["train"].get("points", "grid") != "grid":
        raise UserError(f"{where}: a grid CNN run trained on 2-D grids translates, this one is not")
    return PointSampler(kind="grid", n=info["train"]["num_points"], dim=2).grid_shape()


def twin_network(init: dict, in_channels: int, classes: int, where: str = "run.json init") -> nn.Module:
    """The translated network an `init` record describes, with the CNN's initial (untrained) weights."""
    from fieldlab import _validate as v
    from fieldlab.learn.nets import net_config

    v.check_keys(init, {"net": str, "net_options": dict, "grid": list}, where, optional={"quadrature": str})
    if init["net"] not in TWINS:
        raise UserError(f"{where}: {init['net']!r} has no DI twin; runs of {', '.join(TWINS)} translate")
    if len(init["grid"]) != 2:
        raise UserError(f"{where}: grid must be two sizes, got {len(init['grid'])}")
    grid = tuple(v.bounded_int(n, "grid size", 1, v.LIMITS.samples, where=where) for n in init["grid"])
    cnn = net_config(init["net"], **init["net_options"]).build(in_channels, classes)
    return translate(cnn, grid, quadrature=init.get("quadrature", "tap"))


def trained_twin(init: dict, store) -> nn.Module:
    """The translated network of `init_record`, with the trained CNN's weights (in training mode)."""
    from fieldlab.learn.train import load_run

    cnn, _, _ = load_run(init["run"], store)
    return translate(cnn, tuple(init["grid"]), quadrature=init["quadrature"]).train()


# -- torchvision stems (optional extra) ------------------------------------------------------------
STEMS = ("resnet18", "efficientnet_b0", "convnext_tiny")


def torchvision_stem(name: str, *, blocks: int = 2, weights: str | None = None) -> nn.Module:
    """The first `blocks` stages of a torchvision model as a CNN ready for `translate` (as DI-Net's
    `snet_train` / `cnext_train` truncate EfficientNet and ConvNeXt). `weights` is a torchvision weights
    name (e.g. "DEFAULT"); None builds a randomly initialized model (no download)."""
    try:
        import torchvision.models as tvm
    except ImportError:
        raise missing_extra("torchvision", "learn") from None
    if name not in STEMS:
        raise UserError(f"unknown stem {name!r}; choose from {', '.join(STEMS)}")
    model = getattr(tvm, name)(weights=weights)
    if name == "resnet18":
        stages = [model.layer1, model.layer2, model.layer3, model.layer4][:max(0, blocks - 1)]
        return nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, *stages)
    return nn.Sequential(*list(model.features)[:blocks])
