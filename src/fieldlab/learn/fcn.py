"""Grid FCN segmentation baselines (DI-Net's FCN-3 / FCN-5): a fully convolutional network on the field
rendered to a grid, its per-pixel logits then queried at any points.

The network sees the field at the cell centres of a grid (`fieldlab.learn.points.grid`); its logit image is
read at the requested points by bilinear interpolation (cell centres, `align_corners=False`, border values
beyond the outermost centres), so at the grid's own points it returns the pixel logits exactly and at any
other point set (QMC, shrunk, a finer grid) it is the usual "upsample the FCN output" evaluation. Training
and `fieldlab eval` render the grid with as many points as the step's point set and score the logits at
the step's points themselves.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from fieldlab._errors import UserError
from fieldlab.learn.layers import Discretized
from fieldlab.learn.nets import NetConfig, grid_image, register_net
from fieldlab.learn.points import PointSet


def query_image(image: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Values (b, n, c) of images (b, c, H, W) at canonical points `coords` (n, 2), (row, column) order,
    bilinear between pixel centres."""
    b = image.shape[0]
    where = coords[:, [1, 0]].to(image.dtype)  # grid_sample wants (x = column, y = row)
    where = where.expand(b, 1, *where.shape)  # (b, 1, n, 2)
    return F.grid_sample(image, where, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0].transpose(1, 2)


class GridFCN(nn.Module):
    """`forward(x, queries)`: x on a grid → per-point logits at `queries` (default: x's own points).
    With `branch`, a max-pooled half-resolution branch is up-sampled back and added (FCN-5)."""

    def __init__(self, stem: nn.Module, head: nn.Module, branch: nn.Module | None = None):
        super().__init__()
        self.stem, self.branch, self.head = stem, branch, head

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        y = self.stem(image)
        if self.branch is not None:
            low = self.branch(F.max_pool2d(y, 2, ceil_mode=True))
            y = y + F.interpolate(low, size=y.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(y)

    def forward(self, x: Discretized, queries: PointSet | None = None) -> Discretized:
        if not x.points.is_grid or x.points.dim != 2:
            raise UserError("a grid FCN reads the field on a 2-D grid")
        out = queries if queries is not None else x.points
        return Discretized(query_image(self.logits(grid_image(x)), out.coords), out)


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


@dataclasses.dataclass(frozen=True)
class FCNConfig(NetConfig):
    takes: ClassVar[str] = "grid"
    task: ClassVar[str] = "segment"
    channels: int = 32
    """Width of the convolutions."""

    def __post_init__(self):
        if self.channels < 1:
            raise UserError(f"--channels must be positive, got {self.channels}")

    def _check(self, dim: int) -> None:
        if dim != 2:
            raise UserError(f"{self.name} is a 2-D FCN; the store holds {dim}-D fields")


@register_net("fcn3")
@dataclasses.dataclass(frozen=True)
class FCN3Config(FCNConfig):
    """FCN-3 segmentation baseline: two 3×3 conv-BN-ReLU layers and a 1×1 head on the rendered grid."""

    def build(self, in_channels, out_channels, dim=2):
        self._check(dim)
        c = self.channels
        return GridFCN(nn.Sequential(*_conv_bn_relu(in_channels, c), *_conv_bn_relu(c, c)), nn.Conv2d(c, out_channels, 1))


@register_net("fcn5")
@dataclasses.dataclass(frozen=True)
class FCN5Config(FCNConfig):
    """FCN-5: conv; a max-pooled branch of two convs up-sampled ×2 and added; conv; 1×1 head."""

    def build(self, in_channels, out_channels, dim=2):
        self._check(dim)
        c = self.channels
        branch = nn.Sequential(*_conv_bn_relu(c, 2 * c), nn.Conv2d(2 * c, c, 3, padding=1))
        return GridFCN(nn.Sequential(*_conv_bn_relu(in_channels, c)),
                       nn.Sequential(*_conv_bn_relu(c, c), nn.Conv2d(c, out_channels, 1)), branch)
