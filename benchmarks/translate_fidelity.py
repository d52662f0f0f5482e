"""How faithful is a CNN translated into a DI-Net (`fieldlab.learn.translate`) away from its grid?

A smooth random field (a sum of 24 plane waves up to 2 cycles per unit, evaluated exactly anywhere) is
read at s² points (grid, QMC, i.i.d. random, shrunk) for s = 16 and 32, and the translated network's outputs are compared with
the CNN's:
  * one 3×3 conv (random weights): the reference at a query q is the CNN's filter applied to the field
    itself, Σ_t W_t f(q + t·pixel) (zero outside [-1, 1]², the CNN's padding), at the DI layer's own output
    points; on the grid that is the CNN's output.
  * `cnn4` (8 channels, random weights and normalization statistics, eval mode) translated at s²: its logits
    on each point set against the CNN's logits on the s² grid; and translated at 16², read at 32² points
    (the CNN itself, run on a 32² grid, sees every feature at half its size).
The error is ‖DI − reference‖ / ‖reference‖ over 16 fields, for `quadrature="plain"` (DI-Net's Σ w K f) and
the default per-tap correction (`TapConv`). CPU, seconds:

    python benchmarks/translate_fidelity.py
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from fieldlab.learn import points as P
from fieldlab.learn.layers import Discretized
from fieldlab.learn.nets import net_config
from fieldlab.learn.translate import translate

FIELDS, WAVES, TOP = 16, 24, 2 * 2 * math.pi  # 2 cycles per unit: smooth at 16², as a fitted digit is


def field(coords: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(FIELDS, n, 1) values of smooth random fields at coords (n, 2)."""
    g = torch.Generator().manual_seed(seed)
    freq = (torch.rand(FIELDS, WAVES, 2, generator=g) * 2 - 1) * TOP
    phase = torch.rand(FIELDS, WAVES, 1, generator=g) * 2 * math.pi
    amp = torch.randn(FIELDS, WAVES, 1, generator=g) / math.sqrt(WAVES)
    return (amp * torch.sin(freq @ coords.float().T + phase)).sum(1)[..., None]


def point_set(kind: str, side: int) -> P.PointSet:
    n = side * side
    sets = {"grid": lambda: P.grid((side, side)), "qmc": lambda: P.qmc(n, 2), "random": lambda: P.uniform(n, 2),
            "shrunk": lambda: P.shrunk(n, 2)}
    return sets[kind]()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def conv_error(side: int, kind: str, quadrature: str) -> float:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
    di = translate(nn.Sequential(conv), (side, side), quadrature=quadrature)
    pts = point_set(kind, side)
    out = di(Discretized(field(pts.coords), pts)).values
    pitch = 2.0 / side
    ref = torch.zeros_like(out)
    q = pts.coords  # stride 1: the outputs sit at the input points
    for i, dy in enumerate((-1, 0, 1)):
        for j, dx in enumerate((-1, 0, 1)):
            at = q + torch.tensor([dy, dx]) * pitch
            inside = (at.abs() <= 1).all(-1)[None, :, None]
            ref += field(at) * inside * conv.weight[:, 0, i, j]
    return relative(out, ref.detach())


def net_error(side: int, kind: str, quadrature: str, trained: int | None = None) -> float:
    """`cnn4` translated at trained² (default side²), read at side² points, against the CNN on its grid."""
    trained = trained or side
    torch.manual_seed(0)
    cnn = net_config("cnn4", channels=8).build(1, 10)
    for m in cnn.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2)
    cnn.eval()
    grid = P.grid((trained, trained))
    ref = cnn(Discretized(field(grid.coords), grid))
    pts = point_set(kind, side)
    di = translate(cnn, (trained, trained), quadrature=quadrature)
    return relative(di(Discretized(field(pts.coords), pts)), ref)


@torch.no_grad()
def main() -> None:
    print("| what | points | plain Σ w K f | per-tap correction |")
    print("|---|---|---|---|")
    for what, measure in (("3×3 conv", conv_error), ("cnn4 logits", net_error)):
        for side in (16, 32):
            for kind in ("grid", "qmc", "random", "shrunk"):
                plain, tap = (measure(side, kind, q) for q in ("plain", "tap"))
                print(f"| {what} | {kind} {side}² | {100 * plain:.1f}% | {100 * tap:.1f}% |")
    for kind in ("grid", "qmc", "random", "shrunk"):  # a finer discretization than the CNN was trained at
        plain, tap = (net_error(32, kind, q, trained=16) for q in ("plain", "tap"))
        print(f"| cnn4 at 16², logits | {kind} 32² | {100 * plain:.1f}% | {100 * tap:.1f}% |")


if __name__ == "__main__":
    main()
