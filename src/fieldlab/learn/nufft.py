"""The non-uniform Fourier CNN baseline (Jiang et al., "Convolutional Neural Networks on Non-uniform
Geometrical Signals Using Euclidean Spectral Transformation", ICLR 2019, https://arxiv.org/abs/1901.02070),
done right.

A field sampled at any points x_j (quadrature weights w_j) is turned into a band-limited image on a K^d
grid, then read by a CNN:

    F(k) = ∫ f(x) e^{-iπ k·x} dx ≈ Σ_j w_j f(x_j) e^{-iπ k·x_j},   k ∈ {-K/2, …, K/2 - 1}^d      (type-1 NUFFT)
    g(c) = 2^-d Σ_k F(k) e^{iπ k·c}   at the cell centres c of the K^d grid                          (inverse DFT)

Two things DI-Net's baseline got wrong are right here: the NUFFT's coordinates are in radians
(ω = -π x for x ∈ [-1, 1], so the domain is one period), and the samples carry density compensation
(the point set's quadrature weights: 1/n of the volume for uniform sets, density-corrected for `shrunk`),
so F is a quadrature of the Fourier integral rather than a sum that grows where points crowd. On a K^d
grid of cell centres g reproduces the samples exactly (the test checks it against `torch.fft`).

Backends: "kbnufft" (torchkbnufft's Kaiser–Bessel NUFFT, `pip install 'fieldlab[nufft]'`, O(n + K^d log K))
or "exact" (a direct type-1 NUDFT in torch, O(n · K^d) time and memory, exact; for small sets and tests).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar, Literal

import torch
import torch.nn as nn

from fieldlab._errors import UserError, missing_extra
from fieldlab.learn.fcn import query_image
from fieldlab.learn.layers import Discretized
from fieldlab.learn.nets import NetConfig, _conv_bn, _ResBlock, register_net
from fieldlab.learn.points import PointSet

Backend = Literal["kbnufft", "exact"]


def frequencies(size: int, device=None) -> torch.Tensor:
    """The integer frequencies -K/2 … K/2 - 1 of one axis."""
    return torch.arange(size, device=device, dtype=torch.float64) - size // 2


def spectrum(values: torch.Tensor, points: PointSet, size: int, backend: Backend = "kbnufft") -> torch.Tensor:
    """F (b, c, K, …, K) complex: the density-compensated type-1 NUFFT of values (b, n, c) at `points`."""
    d = points.dim
    data = (values * points.weights[None, :, None].to(values)).transpose(1, 2)  # (b, c, n)
    if backend == "exact":
        axes = [frequencies(size, values.device)] * d
        k = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)  # (K^d, d)
        phase = torch.exp(-1j * math.pi * (points.coords.double() @ k.T))  # (n, K^d)
        out = data.to(torch.complex128) @ phase
        return out.reshape(*data.shape[:2], *(size,) * d).to(torch.complex64)
    if backend != "kbnufft":
        raise UserError(f"NUFFT backend must be kbnufft or exact, got {backend!r}")
    adjoint = _kb_adjoint(size, d, str(values.device))
    omega = (-math.pi * points.coords.float()).T.contiguous()  # radians: the domain [-1, 1] is one period
    return adjoint(data.to(torch.complex64).contiguous(), omega)


def _torchkbnufft():
    try:
        import torchkbnufft
    except ImportError:
        raise missing_extra("torchkbnufft", "nufft") from None
    return torchkbnufft


@functools.lru_cache(maxsize=8)
def _kb_adjoint(size: int, dim: int, device: str):
    """torchkbnufft's adjoint NUFFT for a size^dim grid (its interpolation tables are built once per device)."""
    return _torchkbnufft().KbNufftAdjoint(im_size=(size,) * dim).to(device)


def spectral_image(values: torch.Tensor, points: PointSet, size: int, backend: Backend = "kbnufft") -> torch.Tensor:
    """The band-limited image (b, c, K, …, K) of the sampled field at the cell centres of a K^d grid."""
    F = spectrum(values, points, size, backend)
    d = points.dim
    centres = (torch.arange(size, device=values.device, dtype=torch.float64) + 0.5) * 2 / size - 1
    inverse = torch.exp(1j * math.pi * centres[:, None] * frequencies(size, values.device)[None, :]) / 2  # (K, K)
    inverse = inverse.to(F.dtype)
    for axis in range(d):  # separable inverse DFT, one axis at a time: (…, k_a, …) → (…, c_a, …)
        F = torch.movedim(torch.tensordot(F, inverse, dims=([2 + axis], [1])), -1, 2 + axis)
    return F.real.float()


class NUFTNet(nn.Module):
    """NUFFT to a K^d image, then a CNN: a classifier (global pool, MLP) or, with `segment`, per-pixel
    logits queried back at the input points."""

    def __init__(self, body: nn.Module, head: nn.Module, size: int, backend: Backend, segment: bool):
        super().__init__()
        if backend == "kbnufft":
            _torchkbnufft()  # a missing extra stops the run when the net is built, before anything is written
        self.body, self.head, self.size, self.backend, self.segment = body, head, size, backend, segment

    def forward(self, x: Discretized):
        image = spectral_image(x.values, x.points, self.size, self.backend)
        features = self.body(image)
        if self.segment:
            return Discretized(query_image(self.head(features), x.points.coords), x.points)
        return self.head(features.flatten(2).mean(-1))


@dataclasses.dataclass(frozen=True)
class NUFTConfig(NetConfig):
    channels: int = 32
    """Width of the CNN."""
    size: int = 0
    """Side K of the spectral grid (K^2 frequencies); 0: the side of the training point count."""
    backend: Literal["kbnufft", "exact"] = "kbnufft"
    """kbnufft (torchkbnufft, the 'nufft' extra) or exact (direct NUDFT, small sets only)."""

    def __post_init__(self):
        if self.channels < 1 or self.size < 0:
            raise UserError("--channels must be positive and --size non-negative")

    def for_points(self, n: int, dim: int) -> NUFTConfig:
        if self.size > 0:
            return self
        return dataclasses.replace(self, size=max(2, round(n ** (1 / dim))))

    def _size(self, dim: int) -> int:
        if dim != 2:
            raise UserError(f"{self.name} is a 2-D CNN; the store holds {dim}-D fields")
        return self.size or 16


@register_net("nuft")
@dataclasses.dataclass(frozen=True)
class NUFTClassifierConfig(NUFTConfig):
    """NUFFT CNN classifier (Jiang et al. 2019): density-compensated NUFFT to a grid image, CNN-4 body."""

    def build(self, in_channels, out_channels, dim=2):
        size, c = self._size(dim), self.channels
        body = nn.Sequential(*_conv_bn(in_channels, c), *_conv_bn(c, 2 * c, 2), _ResBlock(2 * c))
        head = nn.Sequential(nn.Linear(2 * c, 128), nn.ReLU(), nn.Linear(128, out_channels))
        return NUFTNet(body, head, size, self.backend, segment=False)


@register_net("nuft_seg")
@dataclasses.dataclass(frozen=True)
class NUFTSegmenterConfig(NUFTConfig):
    """NUFFT CNN segmenter: the NUFFT image, an FCN-3 body, per-pixel logits queried at the input points."""

    task: ClassVar[str] = "segment"

    def build(self, in_channels, out_channels, dim=2):
        size, c = self._size(dim), self.channels
        body = nn.Sequential(*_conv_bn(in_channels, c), *_conv_bn(c, c))
        return NUFTNet(body, nn.Conv2d(c, out_channels, 1), size, self.backend, segment=True)
