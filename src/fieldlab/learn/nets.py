"""Networks on fields: DI-Nets (classification, segmentation, field-to-field) and baselines.

A registered network has a frozen `<Name>NetConfig` whose `build(in_channels, out_channels, dim)` makes
the module. `takes` says what the module eats: "points" (a `Discretized`: the field sampled at a point
set), "grid" (the same, on a grid, as an image) or "params" (the stored per-field tensors themselves).
Classifiers return logits (b, classes); segmenters return a `Discretized` of per-point logits; the SDF
network returns values at query points.

Supports are half-widths in canonical units ([-1, 1] per axis); a strided layer doubles its support,
as a CNN's receptive field doubles.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

import torch
import torch.nn as nn

from fieldlab._errors import UserError
from fieldlab._registry import Registry
from fieldlab.learn._neighbors import Support
from fieldlab.learn.layers import (DIConv, DINorm, Discretized, MLPKernel, Pointwise, Residual, SeparableDIConv,
                                   Upsample, global_pool)
from fieldlab.learn.points import PointSet

_NETS: Registry[type] = Registry("network", "choose from")
BASE_LR = 2e-3
"""The peak learning rate of a network that names no other (`NetConfig.train_lr`): the first DI-Net sweep's."""
SEPARABLE_LR = 8e-3
"""A separable DI-Net-4's (`dinet`'s default), chosen on the digits' validation split (BENCHMARKS.md, "A separable
DI-Net's learning rate")."""
SEPARABLE_FROM = 8
"""`separable` networks keep a full kernel in layers reading fewer channels than this (an image's 1-4): a
depthwise kernel there would leave the layer one filter per input channel."""


def register_net(name: str):
    """Class decorator that registers a `NetConfig` subclass under `name`; a duplicate name raises."""
    return _NETS.register(name)


def list_nets() -> list[str]:
    return _NETS.names()


def net_config(name: str, **options) -> NetConfig:
    """The config of network `name`, with `options` checked against its fields and coerced to their types."""
    cls = _NETS.get(name)
    from fieldlab.fields import coerce_option

    import typing

    hints = typing.get_type_hints(cls)
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise UserError(f"network {name!r} does not take {', '.join('--' + k.replace('_', '-') for k in unknown)}")
    return cls(**{k: coerce_option(k, v, hints[k]) for k, v in options.items()})


@dataclasses.dataclass(frozen=True)
class NetConfig:
    name: ClassVar[str] = ""
    takes: ClassVar[str] = "points"
    task: ClassVar[str] = "classify"
    train_points: ClassVar[str] = "rqmc"
    """The training point set `train --points auto` (the default) gives this network."""

    def build(self, in_channels: int, out_channels: int, dim: int = 2) -> nn.Module:
        raise NotImplementedError

    def train_lr(self) -> float:
        """The peak learning rate `train --lr 0` (the default) gives this network."""
        return BASE_LR

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DINetConfig(NetConfig):
    channels: int = 32
    """Width of the first layer (later layers double it)."""
    support: float = 0.0
    """Half-width of the first convolution's support, in canonical units; 0 sizes it so that about
    `neighbours` training points fall inside (`for_points`)."""
    neighbours: float = 32.0
    """Expected training points in the first support when `support` is 0."""
    shape: Literal["box", "ball"] = "box"
    """Support shape."""
    normalization: Literal["integral", "mean"] = "integral"
    """Quadrature sum (∫ K f) or weighted local mean in every convolution."""
    num_basis: int = 16
    """Sine features of each MLP kernel."""
    quadrature: Literal["given", "cells"] = "given"
    """Quadrature weights the layers sum with: the point set's own ("given", its sampler's density) or
    each point's Voronoi cell volume ("cells", `PointSet.with_cell_weights`), which follows the clumps
    and holes of the points actually drawn."""
    separable: bool = False
    """Convolutions reading at least SEPARABLE_FROM channels are depthwise then a 1×1 mix (`SeparableDIConv`):
    a fraction of a full kernel's work; the layer reading the input's few channels keeps a full kernel."""
    multiplier: int = 1
    """Kernels per input channel of a separable convolution (its depthwise part's channel multiplier)."""
    down_support: float = 2.0
    """Support of the strided (down-sampling) convolution, as a multiple of the first layer's: 2 keeps its
    neighbour count at the coarse layers' (a CNN's doubled receptive field), 1 reads the fine points in the
    first layer's reach (as a 3×3 stride-2 CNN layer; a quarter of the pairs)."""

    def __post_init__(self):
        if (self.channels < 1 or self.support < 0 or self.num_basis < 1 or self.neighbours <= 0 or self.multiplier < 1
                or not self.down_support > 0):
            raise UserError("--channels, --num-basis, --neighbours, --multiplier and --down-support must be positive, "
                            "--support non-negative")
        if self.quadrature not in ("given", "cells"):
            raise UserError(f"--quadrature must be given or cells, got {self.quadrature!r}")

    def for_points(self, n: int, dim: int) -> DINetConfig:
        """This config with `support` resolved for n training points in [-1, 1]^dim: a support that
        holds a handful of points, so the quadrature is an average, not one sample (DI-Net's 0.05 box
        held 0.6 neighbours at 32², making its first layer nearly a 1×1 conv)."""
        if self.support > 0:
            return self
        volume_per_point = 2.0 ** dim / n
        if self.shape == "ball":
            unit = math.pi ** (dim / 2) / math.gamma(dim / 2 + 1)
            half = (self.neighbours * volume_per_point / unit) ** (1 / dim)
        else:
            half = (self.neighbours * volume_per_point) ** (1 / dim) / 2
        return dataclasses.replace(self, support=round(half, 4))

    def conv(self, c_in: int, c_out: int, dim: int, scale: float = 1.0, stride: int = 1, bias: bool = True) -> DIConv:
        if self.support <= 0:
            raise ValueError("resolve the support first: config.for_points(n, dim)")
        half = self.support * scale
        support = Support.sphere(half, dim) if self.shape == "ball" else Support.box(half, dim)
        options = dict(kernel=MLPKernel(support, num_basis=self.num_basis), normalization=self.normalization,
                       stride=stride, bias=bias)
        if self.separable and c_in >= SEPARABLE_FROM:
            return SeparableDIConv(c_in, c_out, support, multiplier=self.multiplier, **options)
        # a separable network's layers read channels first, its full first layer writes them so
        return DIConv(c_in, c_out, support, channels_first=self.separable, **options)

    def block(self, c_in: int, c_out: int, dim: int, scale: float = 1.0, stride: int = 1) -> nn.Sequential:
        # no conv bias before a norm: the norm removes it, and Adam would amplify its noise gradient; the norm
        # applies the ReLU in its own passes (a run saved with a separate ReLU module loads: it had no parameters)
        return nn.Sequential(self.conv(c_in, c_out, dim, scale, stride, bias=False), DINorm(c_out, relu=True))


def weighed(x: Discretized, quadrature: str) -> Discretized:
    """`x` on its points weighted as `quadrature` says (cell weights are cached on the point set)."""
    return Discretized(x.values, x.points.with_cell_weights()) if quadrature == "cells" else x


class ClassifierHead(nn.Module):
    """Global quadrature-weighted mean (∫ f / |Ω|), then Linear–ReLU–Linear.

    DI-Net concatenates a global max too; a max over points grows with the number of points (and
    with their density), so it is left out: the mean alone is discretization invariant.
    """

    def __init__(self, channels: int, classes: int, hidden: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: Discretized) -> torch.Tensor:
        return self.mlp(global_pool(x, "avg"))


class DIClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module, quadrature: str = "given"):
        super().__init__()
        self.encoder, self.head, self.quadrature = encoder, head, quadrature

    def forward(self, x: Discretized) -> torch.Tensor:
        return self.head(self.encoder(weighed(x, self.quadrature)))


@register_net("dinet2")
@dataclasses.dataclass(frozen=True)
class DINet2Config(DINetConfig):
    """DI-Net-2: two DI convolutions (the second strided), global pooling, MLP head."""

    def build(self, in_channels, out_channels, dim=2):
        c = self.channels
        encoder = nn.Sequential(self.block(in_channels, c, dim), self.block(c, 2 * c, dim, self.down_support, stride=2))
        return DIClassifier(encoder, ClassifierHead(2 * c, out_channels), self.quadrature)


@register_net("dinet4")
@dataclasses.dataclass(frozen=True)
class DINet4Config(DINetConfig):
    """DI-Net-4: conv, strided conv, a pure residual block of two convs, global pooling, MLP head.

    Its defaults (Voronoi cell weights, 600 steps on a mix of point sets) were chosen on a validation split of
    digits by `benchmarks/dinet_sweep.py` (BENCHMARKS.md, issue 20). Its cost-aware pass (`--cost`, CPU, 300-step
    trials) kept 48 full-kernel channels: 32 channels lost 1.2 validation points, 8 basis functions 0.6, 24
    neighbours 0.9, and 24 channels with 4 basis functions (cnn4's work per step) 1.3 and 2.2 on two seeds. The
    separable convolutions (`separable`, 64 channels) then came within 0.3 points of those 48 full channels
    (98.32 against 98.61, four seeds of 600 steps) at a tenth of their work, 3.5-4× their CPU steps/s."""

    train_points: ClassVar[str] = "mixed"
    channels: int = 64
    quadrature: Literal["given", "cells"] = "cells"
    separable: bool = True

    def train_lr(self) -> float:
        # full kernels keep the first sweep's choice (its lr stage tried 1e-3 and 4e-3)
        return SEPARABLE_LR if self.separable else super().train_lr()

    def build(self, in_channels, out_channels, dim=2):
        c = self.channels
        body = nn.Sequential(self.block(2 * c, 2 * c, dim, 2.0), self.conv(2 * c, 2 * c, dim, 2.0, bias=False),
                             DINorm(2 * c))
        encoder = nn.Sequential(self.block(in_channels, c, dim), self.block(c, 2 * c, dim, self.down_support, stride=2),
                                Residual(body, post=Pointwise(nn.ReLU())))
        return DIClassifier(encoder, ClassifierHead(2 * c, out_channels), self.quadrature)


@register_net("dinet")
@dataclasses.dataclass(frozen=True)
class DINetDefaultConfig(DINet4Config):
    """The default classifier: DI-Net-4."""


class DISegmenter(nn.Module):
    """Per-point logits; with `down`, a strided branch is brought back by up-sampling and added (a U)."""

    def __init__(self, stem: nn.Module, head: nn.Module, down: nn.Module | None = None, quadrature: str = "given"):
        super().__init__()
        self.stem, self.down, self.head, self.quadrature = stem, down, head, quadrature
        self.up = Upsample(k=3)

    def forward(self, x: Discretized) -> Discretized:
        y = self.stem(weighed(x, self.quadrature))
        if self.down is not None:
            low = self.down(y)
            y = Discretized(y.values + self.up(low, y.points).values, y.points)
        return self.head(y)


@register_net("dinet3")
@dataclasses.dataclass(frozen=True)
class DINet3Config(DINetConfig):
    """DI-Net-3 segmenter: two DI convolutions and a per-point linear head."""

    task: ClassVar[str] = "segment"

    def build(self, in_channels, out_channels, dim=2):
        c = self.channels
        stem = nn.Sequential(self.block(in_channels, c, dim), self.block(c, c, dim, 2.0))
        return DISegmenter(stem, Pointwise(nn.Linear(c, out_channels)), quadrature=self.quadrature)


@register_net("dinet5")
@dataclasses.dataclass(frozen=True)
class DINet5Config(DINetConfig):
    """DI-Net-5 segmenter: conv; a strided branch (two convs) up-sampled back and added; conv; head."""

    task: ClassVar[str] = "segment"

    def build(self, in_channels, out_channels, dim=2):
        c = self.channels
        stem = self.block(in_channels, c, dim)
        down = nn.Sequential(self.block(c, 2 * c, dim, self.down_support, stride=2), self.conv(2 * c, c, dim, 4.0))
        head = nn.Sequential(self.block(c, c, dim, 2.0), Pointwise(nn.Linear(c, out_channels)))
        return DISegmenter(stem, head, down, self.quadrature)


class DIFieldMap(nn.Module):
    """Field to field: encode at the input points, then a DI convolution evaluated at query points."""

    def __init__(self, encoder: nn.Module, decoder: DIConv, head: nn.Module):
        super().__init__()
        self.encoder, self.decoder, self.head = encoder, decoder, head

    def forward(self, x: Discretized, queries: PointSet | None = None) -> Discretized:
        z = self.encoder(x)
        y = self.decoder(z, out_points=queries if queries is not None else x.points)
        return y.with_values(self.head(y.values))


@register_net("sdf")
@dataclasses.dataclass(frozen=True)
class SDFNetConfig(DINetConfig):
    """Field-to-field (SDF): two DI convs, a decoder conv queried at arbitrary points, MLP, tanh."""

    task: ClassVar[str] = "field"

    def build(self, in_channels, out_channels, dim=3):
        c = self.channels
        encoder = nn.Sequential(self.block(in_channels, c, dim), self.block(c, 2 * c, dim, self.down_support, stride=2))
        head = nn.Sequential(nn.ReLU(), nn.Linear(c, c), nn.ReLU(), nn.Linear(c, out_channels), nn.Tanh())
        return DIFieldMap(encoder, self.conv(2 * c, c, dim, 2.0), head)


# -- baselines -----------------------------------------------------------------------------------
class GridCNN(nn.Module):
    """A CNN on the field rendered to the grid it is sampled on (DI-Net's CNN-2 / CNN-4 baselines)."""

    def __init__(self, layers: nn.Module, channels: int, classes: int):
        super().__init__()
        self.layers = layers
        self.head = nn.Sequential(nn.Linear(channels, 128), nn.ReLU(), nn.Linear(128, classes))

    def forward(self, x: Discretized) -> torch.Tensor:
        if not x.points.is_grid:
            raise UserError("a grid CNN sees only grid point sets; use --points grid")
        return self.head(self.layers(grid_image(x)).flatten(2).mean(-1))


def grid_image(x: Discretized) -> torch.Tensor:
    """The values of `x`, sampled on a grid, as images (b, c, *shape) in row-major order."""
    b, n, c = x.values.shape
    return x.values[:, x.points.grid_order()].transpose(1, 2).reshape(b, c, *x.points.shape)


def _conv_bn(c_in, c_out, stride=1):
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class _ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(c, c), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.body(x))


@register_net("cnn2")
@dataclasses.dataclass(frozen=True)
class CNN2Config(NetConfig):
    """CNN-2 baseline: two 3×3 conv-BN-ReLU layers on the rendered grid, global pool, MLP."""

    takes: ClassVar[str] = "grid"
    train_points: ClassVar[str] = "grid"  # all it can read: `train --net cnn4` at its defaults trains on grids
    res_blocks: ClassVar[int] = 0
    channels: int = 32

    def build(self, in_channels, out_channels, dim=2):
        c = self.channels
        blocks = [_ResBlock(2 * c) for _ in range(self.res_blocks)]
        return GridCNN(nn.Sequential(*_conv_bn(in_channels, c), *_conv_bn(c, 2 * c, 2), *blocks), 2 * c, out_channels)


@register_net("cnn4")
@dataclasses.dataclass(frozen=True)
class CNN4Config(CNN2Config):
    """CNN-4 baseline: conv, strided conv, residual block, global pool, MLP (DI-Net-4's grid twin)."""

    res_blocks: ClassVar[int] = 1


class ParamsMLP(nn.Module):
    """An MLP on the flattened per-field tensors (SIREN weights, or functa latents)."""

    def __init__(self, size: int, classes: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.BatchNorm1d(size), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mlp(torch.cat([params[k].flatten(1) for k in sorted(params)], 1))


@register_net("mlp")
@dataclasses.dataclass(frozen=True)
class ParamsMLPConfig(NetConfig):
    """MLP on the stored per-field tensors: all weights of a SIREN, or a functa latent (BN → 128 → 128)."""

    takes: ClassVar[str] = "params"
    hidden: int = 128

    def build(self, in_channels, out_channels, dim=2):  # in_channels: the flattened size
        return ParamsMLP(in_channels, out_channels, self.hidden)


class LatentTransformer(nn.Module):
    """A transformer encoder over latent tokens: a spatial functa grid's cells (last axis = features),
    or a vector latent cut into `tokens` pieces; mean-pooled, linear head."""

    def __init__(self, size: int, token_dim: int, classes: int, width: int, depth: int):
        super().__init__()
        self.token_dim = token_dim
        tokens = size // token_dim
        self.embed = nn.Linear(token_dim, width)
        self.position = nn.Parameter(torch.zeros(tokens, width))
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth)
        self.head = nn.Linear(width, classes)

    def forward(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        flat = torch.cat([params[k].flatten(1) for k in sorted(params)], 1)
        tokens = flat.reshape(flat.shape[0], -1, self.token_dim)
        return self.head(self.encoder(self.embed(tokens) + self.position).mean(1))


@register_net("transformer")
@dataclasses.dataclass(frozen=True)
class LatentTransformerConfig(NetConfig):
    """Transformer on latents (functa / spatial functa): tokens of `token_dim` features each."""

    takes: ClassVar[str] = "params"
    token_dim: int = 16
    width: int = 64
    depth: int = 2

    def build(self, in_channels, out_channels, dim=2):
        if in_channels % self.token_dim:
            raise UserError(f"--token-dim {self.token_dim} must divide the latent size {in_channels}")
        return LatentTransformer(in_channels, self.token_dim, out_channels, self.width, self.depth)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flat_size(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())
