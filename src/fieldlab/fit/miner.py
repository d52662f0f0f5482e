"""MINER's trainer: a Laplacian pyramid fitted coarse to fine, block by block, with pruning and retirement.

    signal ─► pad to whole coarsest blocks ─► area pyramid (anti-aliased ×2 down-sampling)
    for scale s = 0 (coarsest) … J-1:
        residual_s = pyramid_s − Σ_{t<s} scale t evaluated at scale s's sample centres
        blocks whose residual MSE ≤ prune-mse get no network
        train the rest, each on its samples and a margin of its neighbours' residual (--margin), one batched
        matmul per layer, in chunks of blocks; every check-every steps,
        blocks whose MSE < stop-mse retire: their parameters and optimizer state leave the training set
    prediction = the stored field evaluated at every sample (the same code that renders it)

Streaming (--streaming on, or auto when a resident fit cannot stay inside --device-budget): the pyramid and
the residuals stay in host memory (pinned on CUDA); a scale's training targets go to the device once when
they fit the budget, else chunk by chunk every step. Under a finite budget the chunks are planned scale by
scale (fit/miner_place.py), with or without streaming.

Precision (--precision tf32|bf16) applies to training the blocks (steps and retirement checks): TF32
matmuls, or bf16 autocast of the hidden layers (BlockNet keeps its first layer, activations and head in
fp32); loss, parameters and Adam are fp32, and residuals and the final prediction are computed in fp32.

Kernel (--kernel fused or auto): on CUDA, sine blocks are stepped by the
fused Triton kernel (`ScaleTrainer(kernel=...)`: one launch does every block's forward, backward and Adam at
the step's positions, reading the targets where they lie); Gaussian blocks (learned widths), the CPU and
`--kernel reference` take autograd over chunks of blocks. Both paths keep the same state, so a checkpoint of one
resumes on the other. `auto` takes the kernel at every precision: measured on an H100 against the reference
path, the same steps and draws (BENCHMARKS.md, "MINER's blocks on the fused kernel", "MINER at fp32 and tf32
on the kernel" and "MINER at fp32 on the kernel, compiled beforehand"), at bf16 the whole pyramid fits 4.6×
(DIV2K 0882) and 6.3× (its 4096² upscale) faster, within 0.07 dB, and the bunny's occupancy at 512³ 4.9× (IoU
within 0.001); at tf32 5.35× and 4.3-4.5×, at fp32 (three TF32 products a product, two warps a block) 2.77×
and 2.08×, each within 0.02 dB. Triton compiles the kernel once per machine and keeps it on disk; that first
fit is slower than autograd (DIV2K at fp32: 12.3 s against 3.6 s).

A block of every scale but the finest renders only its own samples but trains on a band of `--margin`
samples of its neighbours' residual beyond each side too (Local-Global's training margin, `--overlap`), so
its edge samples are inside what it fitted and the coarse scales carry the borders continuously: without
one, the coarsest blocks' borders (where every scale has a border) came out 1.1-1.5 dB worse than their
interiors at 512 px (BENCHMARKS.md, "MINER seams (issue 22)"). The finest blocks, which hold the detail,
keep their own samples: a margin there cost 1.5-2 dB of PSNR and did not mend the coarse borders. The
margin changes only the training points, so renders, crops and extensions stay exact.

Coarser scales are evaluated at the finer samples directly (they are functions of continuous
coordinates), not up-sampled, so the field sums exactly to what was trained at any resolution.

Shape letters: p blocks, m samples per block, d coordinate dims, c channels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

from fieldlab import _deadline
from fieldlab._errors import UserError
from fieldlab._progress import in_pieces, phase
from fieldlab._validate import LIMITS, bounded_int
from fieldlab._optim import Adam
from fieldlab.fields.miner import BlockNet, Miner, MinerConfig
from fieldlab.kernels import FusedSpec, choose_spec
from fieldlab.fit.config import FitConfig
from fieldlab.fit.loop import FitResult, RunLog, autocast_for, matmul_precision, resolve_device
from fieldlab.fit.metrics import metrics_for, psnr_from_mse
from fieldlab.fit.own_engines import OwnEngine, register_engine
from fieldlab.fit.miner_mesh import fit_mesh
from fieldlab.fit.checkpoint import rng_state as checkpoint_rng
from fieldlab.fit.miner_place import POINTS_PER_CHUNK, Placement, placement, scale_bytes, trained_samples
from fieldlab.fit.miner_resume import PyramidCheckpoints
from fieldlab.fit.points import generator, step_points
from fieldlab.fit.schedule import Schedule
from fieldlab.signals import Signal

logger = logging.getLogger("fieldlab")

DEFAULT_POSITIONS = 256
"""Sample positions per block per step (shared by all blocks, as in MINER_pl) unless --batch-size or
--sample-fraction says otherwise; a --batch-size of at least the block's samples trains on whole blocks."""
STEP_SHARES_FINEST = 3
"""The finest scale gets this many shares of --steps, every other scale one (MINER_pl: 50/50/50/200 epochs)."""
MARGIN_FRACTION = 16
"""A block's default training margin is its side over this (Local-Global's `OVERLAP_FRACTION`)."""
PREDICT_CHUNK = 2**18
"""Points per chunk of the final prediction (`predict`), as `fieldlab render` evaluates them."""


@dataclasses.dataclass(frozen=True)
class MinerTrainConfig:
    """How MINER's engine trains its blocks: pruning, retirement and device memory (`fit` flags of a miner
    field, beside FitConfig's; registered with the engine, so they are no part of the field's config)."""

    threshold: Literal["absolute", "relative"] = "absolute"
    """How --prune-mse and --stop-mse are read: as MSEs (MINER_pl) or as fractions of each block's mean
    square target (the official code)."""
    prune_mse: float = 4e-4
    """A block whose target at a new scale has a smaller MSE (on a [0, 1] value range) gets no network
    (4e-4 ≈ 34 dB: only blocks that are already nearly right are left without one)."""
    stop_mse: float = 1e-4
    """A block whose error falls below this MSE (on a [0, 1] range) stops training."""
    check_every: int = 50
    """Steps between the checks that retire converged blocks."""
    streaming: Literal["auto", "on", "off"] = "auto"
    """Keep the pyramid and residuals in host memory and move only the blocks being trained to the device
    (on: always; auto: when a resident fit would exceed --device-budget even in its smallest chunks)."""
    device_budget: float = 0
    """Device bytes the trainer plans its chunks of blocks for, scale by scale; 0: 80% of the free CUDA
    memory, unlimited on the CPU."""
    margin: int | None = None
    """Samples of its neighbours' residual (at its own scale) that each block of every scale but the finest
    also trains on beyond every side, while it renders only its own; unset: 1/16 of the block's side (2 of
    32), at least 1; 0: none."""

    def resolved_margin(self, block_size: int) -> int:
        return max(1, block_size // MARGIN_FRACTION) if self.margin is None else self.margin

    def validate(self) -> None:
        """Each option typed and in range: one UserError naming its flag (the messages the field gave)."""
        for name in ("prune_mse", "stop_mse", "device_budget"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise UserError(f"--{name.replace('_', '-')} must be non-negative, got {value}")
        if self.device_budget > 2**60:
            raise UserError(f"--device-budget must be at most {2**60:g}, got {self.device_budget:g}")
        if self.check_every < 1:
            raise UserError(f"--check-every must be positive, got {self.check_every}")
        bounded_int(self.check_every, "--check-every", 1, LIMITS.width)
        if self.margin is not None:
            bounded_int(self.margin, "--margin", 0, LIMITS.width)
        for name, choices in (("threshold", ("absolute", "relative")), ("streaming", ("auto", "on", "off"))):
            if getattr(self, name) not in choices:
                raise UserError(f"--{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")


@dataclasses.dataclass
class MinerFitResult(FitResult):
    extra_files: dict[str, Callable[[Path], None]] = dataclasses.field(default_factory=dict)
    """Files written beside the reconstruction: name → writer(path)."""


# -- block layout ---------------------------------------------------------------------------------
def to_blocks(grid: torch.Tensor, size: int) -> torch.Tensor:
    """(c, *n) grid → (p, size^d, c) blocks, blocks in row-major order of their positions."""
    c, *n = grid.shape
    d = len(n)
    split = grid.reshape(c, *[v for k in n for v in (k // size, size)])
    order = [1 + 2 * i for i in range(d)] + [2 + 2 * i for i in range(d)] + [0]
    return split.permute(order).reshape(-1, size**d, c)


def from_blocks(blocks: torch.Tensor, size: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `to_blocks`: (p, size^d, c) → (c, *shape)."""
    d, c = len(shape), blocks.shape[-1]
    counts = [k // size for k in shape]
    split = blocks.reshape(*counts, *[size] * d, c)
    order = [2 * d] + [v for i in range(d) for v in (i, d + i)]
    return split.permute(order).reshape(c, *shape)


def local_grid(size: int, d: int, device=None, margin: int = 0) -> torch.Tensor:
    """Local coordinates ((size + 2 margin)^d, d) of the sample centres of a block and of `margin` samples
    beyond each of its sides (past [-1, 1]), in the order of `to_blocks`."""
    axis = (torch.arange(-margin, size + margin, device=device, dtype=torch.float32) + 0.5) * 2 / size - 1
    return torch.stack(torch.meshgrid(*[axis] * d, indexing="ij"), -1).reshape(-1, d)


def inside(size: int, d: int, margin: int, device=None) -> torch.Tensor | None:
    """Positions (size^d,) of a block's own samples among those of `local_grid(size, d, margin=margin)`
    (None without a margin: all of them)."""
    if not margin:
        return None
    axis = torch.arange(margin, size + margin, device=device)
    grid = torch.stack(torch.meshgrid(*[axis] * d, indexing="ij"), -1).reshape(-1, d)
    return ravel(grid, (size + 2 * margin,) * d)


def with_margin(blocks: torch.Tensor, index: torch.Tensor, per_axis: tuple[int, ...], margin: int) -> torch.Tensor:
    """The blocks `index` (p,) of a scale's residual blocks (N, m, c), each widened by `margin` samples of its
    neighbours per side: (p, (size + 2 margin)^d, c). Past the padded grid's ends the residual is replicated
    (as the pyramid pads the signal)."""
    size = round(blocks.shape[1] ** (1 / len(per_axis)))
    if not margin:
        return blocks[index.to(blocks.device)]
    grid = from_blocks(blocks, size, tuple(n * size for n in per_axis))  # (c, *n)
    grid = F.pad(grid[None], [margin] * 2 * len(per_axis), mode="replicate")[0]
    for axis in range(1, grid.ndim):  # windows of size + 2 margin every size samples: (c, *per_axis, *window)
        grid = grid.unfold(axis, size + 2 * margin, size)
    position = unravel(index.to(grid.device), per_axis)
    windows = grid.movedim(0, -1)[tuple(position.T)]  # (p, *window, c): only the kept blocks are copied
    return windows.reshape(len(index), (size + 2 * margin) ** len(per_axis), grid.shape[0])


@torch.no_grad()
def run_blocks(net: BlockNet, params: dict[str, torch.Tensor], x: torch.Tensor,
               points: int = POINTS_PER_CHUNK) -> torch.Tensor:
    """net(params, x) for p blocks at shared local coords x (m, d), `points` block samples at a time: (p, m, c)."""
    p, m = params["w0"].shape[0], x.shape[0]
    out = x.new_empty(p, m, net.out_dim)
    per_block = max(1, min(m, points))
    blocks = max(1, points // per_block)
    for i in range(0, p, blocks):
        chunk = {k: v[i:i + blocks] for k, v in params.items()}
        for j in range(0, m, per_block):
            out[i:i + blocks, j:j + per_block] = net(chunk, x[None, j:j + per_block])
    return out


def pyramid(values: torch.Tensor, padded: tuple[int, ...], scales: int) -> list[torch.Tensor]:
    """Targets (c, *n_s) coarsest first: the signal padded by edge replication, then area-halved."""
    grid = values.movedim(-1, 0)[None]  # (1, c, *shape)
    pad = [v for k, n in reversed(list(zip(padded, values.shape[:-1]))) for v in (0, k - n)]
    if any(pad):
        grid = F.pad(grid, pad, mode="replicate") if grid.ndim in (3, 4, 5) else _pad_edges(grid, padded)
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}.get(values.ndim - 1)
    if pool is None and scales > 1:
        raise UserError(f"MINER supports 1D, 2D and 3D signals, not {values.ndim - 1}D")
    levels = [grid]
    for _ in range(scales - 1):
        levels.append(pool(levels[-1], 2))  # a 2-sample box: area down-sampling, anti-aliased for ×2
    return [g[0] for g in reversed(levels)]


def _pad_edges(grid: torch.Tensor, padded: tuple[int, ...]) -> torch.Tensor:
    for axis, k in enumerate(padded, start=2):
        extra = k - grid.shape[axis]
        if extra:
            edge = grid.narrow(axis, grid.shape[axis] - 1, 1)
            grid = torch.cat([grid, edge.expand(*grid.shape[:axis], extra, *grid.shape[axis + 1:])], axis)
    return grid


@torch.no_grad()
def coarse_sum(model: Miner, scale: int, first: int, count: int, device,
               points: int = POINTS_PER_CHUNK) -> torch.Tensor:
    """Scales 0 … scale-1 evaluated at the samples of scale `scale`'s blocks first … first+count-1: (count, m, c).

    A block of scale t < s covers k = 2^(s-t) blocks of scale s per axis; the samples of the one at offset r
    (0 ≤ r < k per axis) sit at its local coordinates (2r + u + 1) / k − 1, u the child's local coordinates."""
    d, size = model.net.in_dim, model.block_size
    out = torch.zeros(count, size**d, model.net.out_dim, device=device)
    position = unravel(torch.arange(first, first + count, device=device), model.blocks_per_axis(scale))
    u = local_grid(size, d, device)
    for t in range(scale):
        level = model.levels[t]
        if not len(level):
            continue
        k = 2 ** (scale - t)
        slot = level.slots()[ravel(position // k, model.blocks_per_axis(t))]
        offset = position % k
        key = torch.where(slot >= 0, ravel(offset, (k,) * d), -1)
        for r in torch.unique(key[key >= 0]).tolist():
            rows = torch.nonzero(key == r).squeeze(1)
            x = (2 * offset[rows[0]] + u + 1) / k - 1
            out[rows] += run_blocks(model.net, {n: v[slot[rows]] for n, v in level.tensors().items()}, x, points)
    return out


@torch.no_grad()
def residual_blocks(model: Miner, target: torch.Tensor, scale: int, place: Placement, progress: bool = False):
    """Scale `scale`'s target (c, *n) minus the coarser scales, as blocks (N, m, c) in `place.storage`, with
    every block's mean square residual and mean square target on a [0, 1] range (N,) on the device; at most
    `place.max_blocks` blocks are on the device at once (`progress`: a bar over them, else a log line)."""
    blocks = to_blocks(target, model.block_size)
    count = blocks.shape[0]
    chunk = min(count, place.max_blocks)
    error = torch.empty(count, device=place.device)
    reference = torch.empty(count, device=place.device)
    parts = []
    for i, stop in in_pieces(f"residuals of scale {scale}", count, chunk, unit="block", bar=progress):
        y = place.load(blocks[i:stop])
        reference[i:i + len(y)] = ((y + 1) / 2).square().mean(dim=(1, 2))
        residual = coarse_sum(model, scale, i, len(y), place.device, place.points).neg_().add_(y)
        error[i:i + len(y)] = residual.square().mean(dim=(1, 2))  # field range: 4× the MSE on a [0, 1] range
        parts.append(place.keep(residual))
    residual = parts[0] if len(parts) == 1 else torch.cat(parts)
    return residual, error, reference


# -- one scale ------------------------------------------------------------------------------------
def unravel(flat: torch.Tensor, per_axis: tuple[int, ...]) -> torch.Tensor:
    """Row-major flat block indices (p,) → positions (p, d)."""
    position = []
    for n in reversed(per_axis):
        position.append(flat % n)
        flat = flat // n
    return torch.stack(position[::-1], -1)


def ravel(position: torch.Tensor, per_axis: tuple[int, ...]) -> torch.Tensor:
    flat = torch.zeros_like(position[:, 0])
    for i, n in enumerate(per_axis):
        flat = flat * n + position[:, i]
    return flat


def parent_params(model: Miner, scale: int, index: torch.Tensor, fresh: dict[str, torch.Tensor]) -> dict:
    """Children start from their parent's hidden layers: the first layer re-parameterised so that the
    child's local coordinates address the parent's half of each axis exactly; the head starts at 0."""
    parent = model.levels[scale - 1]
    position = unravel(index, model.blocks_per_axis(scale))  # (p, d)
    slot = parent.slots().to(index.device)[ravel(position // 2, model.blocks_per_axis(scale - 1))]
    has = slot >= 0
    params = {k: v.clone() for k, v in fresh.items()}
    if not bool(has.any()):
        return params
    source = {k: v.detach()[slot[has]] for k, v in parent.tensors().items()}
    offset = (position[has] % 2 * 2 - 1).to(fresh["w0"].dtype)  # (q, d): which half of the parent
    for k, v in source.items():
        params[k][has] = v
    # x_parent = (x_child + offset) / 2, so x_parent W + b = x_child (W / 2) + (offset W / 2 + b)
    params["w0"][has] = source["w0"] / 2
    params["b0"][has] = source["b0"] + (offset[:, None, :] @ source["w0"]) / 2
    last = model.net.num_layers
    params[f"w{last}"][has] = 0
    params[f"b{last}"][has] = 0
    return params


class ScaleTrainer:
    """Trains the active blocks of one scale; retired blocks leave the parameters and the optimizer.

    `kernel`: the blocks' `FusedSpec` to step them with the fused Triton kernel (forward, backward and Adam in
    one launch for every block; `fit_pyramid` chooses it as `--kernel` says), or None for autograd and
    fieldlab's Adam in chunks of blocks. The two paths save the same state (parameters and a torch Adam
    state_dict), so a fit saved by one resumes on the other."""

    def __init__(self, net: BlockNet, index: torch.Tensor, params: dict[str, torch.Tensor], target: torch.Tensor,
                 stop: torch.Tensor, *, lr: float, place: Placement | None = None,
                 precision: str = "fp32", margin: int = 0, kernel: FusedSpec | None = None):
        self.net, self.lr, self.precision = net, lr, precision
        # targets live in place.storage or, when they all fit the budget, on its device; the rest on its device
        self.place = place or Placement(target.device)
        self.index, self.target, self.stop = index, target, stop  # (p,), (p, m, c), (p,) MSE thresholds
        self.retired: list[tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]] = []
        self.retired_error = torch.zeros((), device=self.place.device)  # Σ final MSE of the retired blocks
        # target (p, m, c) holds each block's samples and its margin; retirement looks at its own (`self.inside`,
        # kept where the targets are so that only those samples are loaded, and `self.own_x`)
        size = round(target.shape[1] ** (1 / net.in_dim)) - 2 * margin
        self.x = local_grid(size, net.in_dim, self.place.device, margin)
        self.inside = inside(size, net.in_dim, margin, target.device)
        self.own_x = self.x if self.inside is None else self.x[self.inside.to(self.x.device)]
        self.kernel, self.stack, self.adam_steps = kernel, None, 0
        self._load(params, None)

    @property
    def name(self) -> str:
        """Which path does the steps: fused (the Triton kernel) or reference (autograd and fieldlab's Adam)."""
        return "reference" if self.kernel is None else "fused"

    def __len__(self) -> int:
        return self.index.numel()

    def step(self, positions: torch.Tensor | None, lr: float) -> torch.Tensor:
        """One Adam step on every training block at shared sample `positions` (all when None)."""
        if self.stack is not None:
            return self._fused_step(positions, lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = self.x if positions is None else self.x[positions]
        at = None if positions is None else positions.to(self.target.device)
        chunk = min(max(1, self.place.points // x.shape[0]), self.place.max_blocks)
        total = torch.zeros((), device=x.device)
        self.optimizer.zero_grad(set_to_none=True)
        with self._precision():
            for i in range(0, len(self), chunk):
                # one chunk: the leaves themselves (a slice's backward would allocate a second full gradient)
                params = self.params if chunk >= len(self) else {k: v[i:i + chunk] for k, v in self.params.items()}
                y = self.place.load(self.target[i:i + chunk] if at is None else self.target[i:i + chunk, at])
                error = (self.net(params, x[None]) - y).square().mean(dim=(1, 2))
                error.sum().backward()  # blocks are independent: the sum gives each its own gradient
                total += error.detach().sum()
        self.optimizer.step()  # fp32 parameters and Adam state whatever the precision
        return total / max(1, len(self))

    def _fused_step(self, positions: torch.Tensor | None, lr: float) -> torch.Tensor:
        """`step` by the kernel: targets on the device are read where they are (the kernel picks each block's
        `positions`); host targets (streaming) come over `place.max_blocks` blocks at a time, a launch each."""
        self.adam_steps += 1
        hyper = self.stack.hyper([lr], self.adam_steps)[0]
        p, (m, c) = len(self), self.target.shape[1:]
        k = m if positions is None else positions.numel()
        if self.target.device == self.place.device and self.place.max_blocks >= p:
            index = None if positions is None else positions.to(torch.int32)[None].expand(p, k)
            loss = self.stack.step(self.x, self.target, self._rows[:p], hyper, index=index)
        else:
            x = self.x if positions is None else self.x[positions]
            at = None if positions is None else positions.to(self.target.device)
            losses = []
            for i in range(0, p, self.place.max_blocks):
                y = self.place.load(self.target[i:i + self.place.max_blocks] if at is None
                                    else self.target[i:i + self.place.max_blocks, at])
                losses.append(self.stack.step(x, y, self._rows[:len(y)], hyper, fields=slice(i, i + len(y))))
            loss = torch.cat(losses)
        return loss.sum() / (k * c * max(1, p))

    @contextlib.contextmanager
    def _precision(self):
        """--precision for the block networks: TF32 matmuls, or bf16 autocast of the hidden layers."""
        with matmul_precision(self.precision), autocast_for(self.precision, self.x.device):
            yield

    @torch.no_grad()
    def block_errors(self) -> torch.Tensor:
        """MSE (p,) of every training block on all its own samples (not its margin: what it renders), at the
        training precision: the stopping rule sees what training sees."""
        if self.stack is not None:  # the kernel's forward, as many blocks at a time as `points` samples allow
            n = max(1, min(self.place.max_blocks, self.place.points // len(self.own_x)))
            values = lambda i, q: self.stack.forward(self.own_x, fields=slice(i, i + q))  # noqa: E731
        else:
            n = min(256, self.place.max_blocks)
            values = lambda i, q: run_blocks(self.net, {k: v[i:i + q] for k, v in self.params.items()},  # noqa: E731
                                             self.own_x, self.place.points)
        errors = []
        with self._precision():
            for i in range(0, len(self), n):
                y = self.place.load(self.target[i:i + n] if self.inside is None else self.target[i:i + n, self.inside])
                errors.append((values(i, len(y)) - y).square().mean(dim=(1, 2)))
        return torch.cat(errors) if errors else self.x.new_zeros(0)

    def parameters(self) -> dict[str, torch.Tensor]:
        """The training blocks' parameters {w{l}, b{l}, …} (p, …), detached."""
        if self.stack is not None:
            return self.net.from_fused(self.stack.params())
        return {k: v.detach() for k, v in self.params.items()}

    @torch.no_grad()
    def retire(self, errors: torch.Tensor) -> int:
        """Blocks whose error is under their threshold stop training; returns how many retired."""
        done = errors < self.stop
        count = int(done.sum())
        if count:
            self.retired.append((self.index[done], {k: v[done] for k, v in self.parameters().items()}, errors[done]))
            self.retired_error += errors[done].sum()
            self._keep(~done)
        return count

    def _keep(self, keep: torch.Tensor) -> None:
        """Physically shrink the parameters and Adam's state to the blocks in `keep`."""
        if self.stack is not None:
            self.stack.select(keep)
        else:
            old = self.optimizer.state
            params = {k: v.detach()[keep].clone().requires_grad_(True) for k, v in self.params.items()}
            optimizer = Adam(list(params.values()), lr=self.lr)
            for k, p in params.items():
                state = old.get(self.params[k])
                if state:
                    optimizer.state[p] = {n: (s[keep].clone() if s.ndim and s.shape[0] == keep.shape[0] else s)
                                          for n, s in state.items()}
            self.params, self.optimizer = params, optimizer
        self.index, self.stop = self.index[keep], self.stop[keep]
        target = self.target[keep.to(self.target.device)]
        self.target = target if target.device == self.place.device else self.place.keep(target)

    def _load(self, params: dict[str, torch.Tensor], optimizer: dict | None) -> None:
        """Take these block parameters and Adam's state (a torch state_dict; None: fresh) on either path."""
        device = self.index.device
        if self.kernel is None:
            self.params = {k: v.to(device).detach().clone().requires_grad_(True) for k, v in params.items()}
            self.optimizer = Adam(list(self.params.values()), lr=self.lr)
            if optimizer is not None:
                self.optimizer.load_state_dict(optimizer)
            return
        from fieldlab.kernels import FusedStack, pack

        self.stack = FusedStack(self.kernel, self.net.to_fused({k: v.to(device) for k, v in params.items()}),
                                buffers={k: v.to(device) for k, v in self.net.fused_buffers().items()},
                                precision=self.precision)
        self._rows = torch.arange(len(self), dtype=torch.int32, device=device)
        if optimizer is not None and optimizer["state"]:  # torch's format: each parameter's state by position
            moments = [optimizer["state"][i] for i in range(len(params))]
            for name, packed in (("exp_avg", self.stack.m), ("exp_avg_sq", self.stack.v)):
                packed.copy_(pack(self.net.to_fused({k: s[name].to(device) for k, s in zip(params, moments)}),
                                  self.kernel))
            self.adam_steps = int(moments[0]["step"])

    def state_dict(self) -> dict:
        """The blocks still training (index, thresholds, parameters, Adam) and the retired ones."""
        params = self.parameters()
        if self.stack is None:
            optimizer = self.optimizer.state_dict()
        else:  # the kernel's moments as torch's Adam state, so that either path resumes from it
            from fieldlab.kernels import unpack

            leaves = {k: v.clone() for k, v in params.items()}
            adam = Adam(list(leaves.values()), lr=self.lr)
            moments = [self.net.from_fused(unpack(t, self.kernel)) for t in (self.stack.m, self.stack.v)]
            for k, leaf in leaves.items():
                adam.state[leaf] = {"step": torch.tensor(float(self.adam_steps)), "exp_avg": moments[0][k],
                                    "exp_avg_sq": moments[1][k]}
            optimizer = adam.state_dict()
        return {"index": self.index, "stop": self.stop, "params": params,
                "optimizer": optimizer, "retired_error": self.retired_error,
                "retired": [{"index": i, "params": p, "errors": e} for i, p, e in self.retired]}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` of a trainer built for the same scale (the same blocks and targets)."""
        device = self.index.device
        self._keep(torch.isin(self.index, state["index"].to(device)))  # the targets of the blocks still training
        self.stack = None
        self._load(state["params"], state["optimizer"])
        self.stop = state["stop"].to(device)
        self.retired = [(r["index"].to(device), {k: v.to(device) for k, v in r["params"].items()},
                         r["errors"].to(device)) for r in state["retired"]]
        self.retired_error = state["retired_error"].to(self.place.device)

    def finish(self) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Every block of the scale, sorted by index: (index, parameters, final MSE)."""
        errors = self.block_errors()
        parts = self.retired + [(self.index, self.parameters(), errors)]
        index = torch.cat([p[0] for p in parts])
        order = torch.argsort(index)
        params = {k: torch.cat([p[1][k] for p in parts])[order] for k in parts[-1][1]}
        return index[order], params, torch.cat([p[2] for p in parts])[order]


# -- the pyramid ----------------------------------------------------------------------------------
@dataclasses.dataclass
class PyramidStats:
    steps: int = 0
    seconds: float = 0.0
    blocks_per_scale: list[int] = dataclasses.field(default_factory=list)
    pruned_per_scale: list[int] = dataclasses.field(default_factory=list)
    retired_per_scale: list[int] = dataclasses.field(default_factory=list)
    peak_memory_bytes: int | None = None
    streaming: bool = False
    device_budget_bytes: int | None = None
    max_target_blocks_on_device: int = 0
    pyramid_bytes: int = 0
    precision: str = "fp32"
    kernel: str = "reference"
    """Which path stepped the blocks: fused (the Triton kernel) or reference (autograd and fieldlab's Adam)."""
    time_limit: dict = dataclasses.field(default_factory=dict)
    """The command's time limit and what it cut (`Deadline.report`)."""


def _scale_steps(fit_config: FitConfig, scales: int) -> list[int]:
    shares = [1] * (scales - 1) + [STEP_SHARES_FINEST]
    return [max(1, round(fit_config.steps * k / sum(shares))) for k in shares]


def _held(place: Placement, targets: list[torch.Tensor | None], extra: int) -> int:
    """Bytes of data a resident fit holds on the device (the scales of the pyramid still needed, and `extra`);
    none when streaming."""
    return 0 if place.streaming else sum(t.numel() * t.element_size() for t in targets if t is not None) + extra


def fit_pyramid(values: torch.Tensor, config: MinerConfig, fit_config: FitConfig, *,
                train: MinerTrainConfig = MinerTrainConfig(), log_path: Path | None = None,
                progress: bool = False, tensorboard_dir: Path | None = None,
                checkpoints: PyramidCheckpoints | None = None,
                final_points: int | None = None) -> tuple[Miner, PyramidStats]:
    """Fit a MINER field to `values` (*shape, c) in the field range; the module returned holds only the
    blocks that got a network, and lives on the fitting device. `tensorboard_dir`: the log's scalars (loss,
    PSNR estimate, training blocks at each check) and each scale's blocks alive; `checkpoints`: where the fit
    is saved as it goes, and the state it resumes from (`fit.miner_resume`); `final_points`: how many points
    the caller evaluates the field at after the fit, which a time limit leaves time for (None: every sample
    of the grid)."""
    fit_config.validate()
    train.validate()
    shape = tuple(values.shape[:-1])
    if config.shape and tuple(config.shape) != shape:
        raise UserError(f"the field was configured for a {config.shape} grid, but the signal is {shape}")
    if config.parent_init and config.frequencies:
        raise UserError("--parent-init needs --frequencies 0 (an encoded first layer cannot be re-parameterised)")
    if fit_config.compile:
        raise UserError("--compile is not supported by the miner trainer (its block shapes change as blocks retire)")
    device = resolve_device(fit_config.device)
    if fit_config.kernel == "fused" and config.activation != "sine":
        raise UserError(f"--kernel fused steps miner's sine blocks, not {config.activation} ones (their widths are "
                        "learned); use --kernel auto or reference")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(fit_config.seed)
    J = config.scales
    model = config.adapt(shape).replace(blocks=(0,) * J).build().to(device)
    net, size, d = model.net, model.block_size, len(shape)
    kernel = choose_spec(net.fused_spec(), device, fit_config.kernel, fit_config.precision, what="these miner blocks")
    samples = size**d
    margin = train.resolved_margin(size)
    if margin > size:
        raise UserError(f"--margin must be at most the block's side ({size} samples), got {margin}")
    margins = [margin] * (J - 1) + [0]  # the finest blocks carry the detail: a margin there costs PSNR
    lr = fit_config.lr or type(config).lr
    relative = train.threshold == "relative"
    draws = generator(fit_config.seed, device)
    channels = values.shape[-1]
    place = placement(train, model, channels, device)
    stats = PyramidStats(streaming=place.streaming, precision=fit_config.precision,
                         kernel="reference" if kernel is None else "fused",
                         device_budget_bytes=None if math.isinf(place.budget) else int(place.budget))
    steps = _scale_steps(fit_config, J)
    saves = checkpoints or PyramidCheckpoints(None, "")
    log = RunLog(log_path, tensorboard_dir, progress, sum(steps))
    start = time.perf_counter() - saves.restore_levels(model, log, stats, draws)
    # The command's --max-seconds (leaving time for the evaluation and writing that follow), else this fit's.
    deadline = _deadline.active().bounded_by(fit_config.max_seconds or 0.0)
    clock = _ScaleClock(deadline, model, final_points or math.prod(shape))
    try:
        with phase("building the pyramid", 1, bar=progress) as advance:  # a few poolings: too few to count
            targets = [place.keep(t) for t in pyramid(values.to(place.storage, torch.float32), model.padded, J)]
            advance(1)
        stats.pyramid_bytes = sum(t.numel() * t.element_size() for t in targets)
        for s in range(J):
            if s < saves.resumed_scale:  # restored from the checkpoint
                targets[s] = None
                continue
            rng = saves.scale_rng(s, device)
            if not clock.has_time_for(s) and s == 0:  # a field of no block is 0 everywhere: say why, plainly
                deadline.cut(f"no block could be fitted, so the field is 0 everywhere: {deadline.elapsed():.0f} s went "
                             f"before the fit (reading, labelling), and the evaluations that must follow it take "
                             f"about {clock.after(0):.0f} s here for {clock.points:,} samples; give a longer "
                             f"--max-seconds, or fewer samples (--resolution for a mesh, --max-size otherwise)")
            if not clock.has_time_for(s):  # the finer scales stay without blocks: the field is the coarser sum
                deadline.cut(f"fitting stopped before scale {s + 1} of {J}, leaving time for the final evaluation "
                             "and writing")
                for t in range(s, J):
                    stats.blocks_per_scale.append(0)
                    stats.pruned_per_scale.append(model.levels[t].total_blocks)
                    stats.retired_per_scale.append(0)
                break
            # the residual pass: no parameters yet; a resident fit holds this scale's blocks and residual too
            place.plan(model, channels, 0, _held(place, targets, 2 * scale_bytes(model, channels, s)), training=False)
            with clock.evaluating(clock.residual_samples(s)):
                blocks, error, reference = residual_blocks(model, targets[s], s, place, progress)  # (N, m, c)
            targets[s] = None  # this scale's samples are not needed again: free them before training
            reference = reference if relative else 1.0
            index = torch.nonzero(error > 4 * train.prune_mse * reference).squeeze(1)
            stop = 4 * train.stop_mse * (reference[index] if relative else torch.ones_like(index, dtype=torch.float32))
            fresh = net.init(len(index), scale=s, device=device)
            if config.parent_init and s:
                fresh = parent_params(model, s, index, fresh)
            trained = trained_samples(model, margins[s])  # a block's samples and its margin
            batch = fit_config.batch_size or round(fit_config.sample_fraction * trained) or DEFAULT_POSITIONS
            batch = batch if batch < trained else 0  # 0: every sample of every block
            place.plan(model, channels, len(index), _held(place, targets, len(index) * trained * channels * 4),
                       margin=margins[s])
            target = with_margin(blocks, index, model.blocks_per_axis(s), margins[s])
            # a streaming fit whose training targets fit the budget at once moves them to the device once
            target = place.load(target) if place.targets_on_device else place.keep(target)
            trainer = ScaleTrainer(net, index, fresh, target, stop, lr=lr, place=place,
                                   precision=fit_config.precision, margin=margins[s], kernel=kernel)
            untrained = float(error.sum() - error[index].sum())  # pruned blocks' residual stays as error
            del blocks, error, target
            done, retired = saves.restore_scale(s, trainer)
            # each scale decays from lr by its own cosine
            schedule = Schedule(lr, steps[s], "cosine", final=fit_config.lr_final, angle_first=True)
            ends = clock.scale_ends(s, steps)
            stepped = done
            for k in range(done, steps[s]):
                if not len(trainer):
                    break
                if clock.past(ends):
                    deadline.cut(f"fitting stopped scale {s + 1} of {J} after {k:,} of {steps[s]:,} steps, leaving "
                                 "time for the finer scales, the final evaluation and writing")
                    break
                tick = time.perf_counter()
                step_lr = schedule.lr(k)
                positions = step_points(trained, batch, draws, device)
                loss = trainer.step(positions, step_lr)
                stats.steps, stepped = stats.steps + 1, k + 1
                clock.step_seconds = time.perf_counter() - tick
                log.advance(stats.steps, 0.0, deadline)  # the bar moves each second, not only at the checks
                if (k + 1) % train.check_every and k + 1 != steps[s]:
                    continue
                with clock.evaluating(len(trainer) * samples):
                    errors = trainer.block_errors()
                total = untrained + float(errors.sum() + trainer.retired_error)
                retired += trainer.retire(errors)
                estimate = psnr_from_mse(total / model.levels[s].total_blocks)  # mean over all blocks
                log.record(stats.steps, step_lr, time.perf_counter() - start, scale=s, loss=float(loss),
                           psnr=round(estimate, 4), training_blocks=len(trainer))
                if s == J - 1 and fit_config.target_psnr and estimate >= fit_config.target_psnr:
                    break
                if k + 1 < steps[s] and saves.due():
                    start += saves.save(log, model=model, scale=s, scale_step=k + 1, trainer=trainer, retired=retired,
                                        stats=stats, draws=draws, rng=rng, seconds=time.perf_counter() - start)
            index, params, _ = trainer.finish()
            if not stepped:  # cut before its first step: fresh blocks (their random biases) would only add noise
                index, params = index[:0], {name: v[:0] for name, v in params.items()}
            model.levels[s].assign(index, params)
            stats.blocks_per_scale.append(len(index))
            stats.pruned_per_scale.append(model.levels[s].total_blocks - len(index))
            stats.retired_per_scale.append(retired)
            log.scalar("blocks_alive", len(index), s)  # TensorBoard: blocks with a network, against the scale
            del trainer
            if s + 1 < J:  # every scale's end: its residual pass and training are kept
                start += saves.save(log, model=model, scale=s + 1, scale_step=0, trainer=None, retired=0, stats=stats,
                                    draws=draws, rng=checkpoint_rng(device), seconds=time.perf_counter() - start)
        if cuda:
            torch.cuda.synchronize(device)
            stats.peak_memory_bytes = torch.cuda.max_memory_allocated(device)
        stats.seconds = time.perf_counter() - start
        stats.max_target_blocks_on_device = place.peak_blocks
        stats.time_limit = deadline.report()
        kept, every = sum(len(level) for level in model.levels), sum(level.total_blocks for level in model.levels)
        if kept < every:  # the parameters sized before the fit (and `--params`) count every block
            per_block = net.params_per_block()
            why = "their residual was within --prune-mse" + (", or --max-seconds cut them" if deadline.cuts else "")
            logger.info("miner keeps %s of its %s blocks, %s of the %s parameters sized: the others got no network "
                        "(%s)", f"{kept:,}", f"{every:,}", f"{kept * per_block:,}", f"{every * per_block:,}", why)
    finally:
        log.close()
    return model.eval(), stats


class _ScaleClock:
    """MINER under the command's time limit: how long each scale may train so that the finer scales and what
    follows the fit (the final prediction at every sample, writing) still fit in it.

    Evaluations are costed per sample and scale at rates measured on enough work. On a busy CPU every kernel
    launch waits milliseconds for the thread pool, so a small evaluation is all fixed cost: a retirement check
    of the bunny's one coarsest block (4,096 samples) took 0.19 s, and that rate, extrapolated to the 1.3 M
    samples that follow, reserved 64 s of a 45 s limit: the fit stopped after its coarsest scale, at IoU 0,
    in a command that ended after 12.7 s (unlimited, the whole fit ends in 12.6 s). So, under a limit, a
    calibration first times the final prediction's own code on a pyramid of the same blocks (`_final_rate`),
    over as many points as one chunk of the final prediction, whose fixed cost is then counted once per chunk
    as it will be paid. The residual passes and checks (the blocks alone, chunk by chunk) are costed at the
    pooled rate of the evaluations of at least that many samples so far, the calibration's included; the
    final prediction at the larger of that rate and the calibration's, so that a machine that has become
    busier since the calibration is still left time for it."""

    def __init__(self, deadline: _deadline.Deadline, model: Miner, points: int):
        self.deadline, self.model = deadline, model
        self.samples = [level.total_blocks * model.block_size ** model.net.in_dim for level in model.levels]
        self.points = points
        """The final prediction's points (the signal's samples: the grid's padding is not evaluated)."""
        self.enough = min(self.points, PREDICT_CHUNK)
        """The fewest samples an evaluation must have for its rate to count."""
        self.per_point = 0.0
        """Seconds per point and scale of the final prediction (0 without a limit: nothing is reserved)."""
        self.timed = [0.0, 0]
        """Seconds and samples × scales of the evaluations timed on enough work."""
        self.step_seconds = 0.0
        if deadline.bounded:
            seconds = _final_rate(model, self.enough)
            self.per_point, self.timed = seconds / self.enough, [seconds, self.enough]

    @property
    def per_sample(self) -> float:
        """Seconds per block sample evaluated at one scale."""
        return self.timed[0] / self.timed[1] if self.timed[1] else 0.0

    def residual_samples(self, s: int) -> int:
        """Block samples × scales the residual pass of scale `s` evaluates (the coarser scales at its samples)."""
        return self.samples[s] * s

    def after(self, s: int) -> float:
        """Seconds estimated for the evaluations that follow scale `s`'s training: the finer scales' residual
        passes and the final prediction (every scale at every sample)."""
        J = len(self.samples)
        return (self.per_sample * sum(self.residual_samples(t) for t in range(s + 1, J))
                + max(self.per_point, self.per_sample) * self.points * J)

    def has_time_for(self, s: int) -> bool:
        """Whether scale `s` may begin: its residual pass and a step fit before what must follow."""
        cost = self.per_sample * self.residual_samples(s) + self.step_seconds
        return not self.deadline.out_of_time(cost + self.deadline.reserve(after=self.after(s)))

    def scale_ends(self, s: int, steps: list[int]) -> float:
        """When scale `s`'s training must end (a `perf_counter` reading): its share by steps of the time left
        for the training of this scale and the finer ones."""
        if not self.deadline.bounded:
            return math.inf
        left = self.deadline.left() - self.deadline.reserve(after=self.after(s))
        return time.perf_counter() + max(0.0, left) * steps[s] / sum(steps[s:])

    def past(self, ends: float) -> bool:
        return time.perf_counter() + self.step_seconds >= ends

    @contextlib.contextmanager
    def evaluating(self, samples: int):
        """Times an evaluation of `samples` block samples × scales; it joins the rate when it is enough work."""
        tick = time.perf_counter()
        yield
        if samples >= self.enough:
            self.timed[0] += time.perf_counter() - tick
            self.timed[1] += samples


@torch.no_grad()
def _final_rate(model: Miner, points: int) -> float:
    """Seconds that `predict` takes for `points` random points of one scale of `model`'s blocks, every block
    with a network (a throwaway pyramid of one scale, about `points` samples): the quicker of two calls, so
    that neither the one-off costs of a first evaluation nor a moment's burst of another process's load stand
    for the rate. Its parameters are drawn from a fork of the CPU's random state (blocks are drawn there), so
    the fit draws the same numbers with and without a limit."""
    d = model.net.in_dim
    per_axis = max(1, round((points / model.block_size**d) ** (1 / d)))
    with torch.random.fork_rng(devices=[]):
        throwaway = Miner(**dataclasses.asdict(model.net), shape=(per_axis * model.block_size,) * d, scales=1,
                          block_size=model.block_size, blocks=()).to(model.levels[0].index.device)
    coords = torch.rand(points, d, generator=torch.Generator().manual_seed(0)) * 2 - 1
    seconds = []
    for _ in range(2):
        tick = time.perf_counter()
        predict(throwaway, coords)  # gathered on the CPU: the device has finished when it returns
        seconds.append(time.perf_counter() - tick)
    return min(seconds)


@torch.no_grad()
def predict(model: torch.nn.Module, coords: torch.Tensor, chunk: int = PREDICT_CHUNK) -> torch.Tensor:
    """The field at canonical coords (n, d), on the model's device, chunk by chunk, gathered on the CPU
    (the same chunks as `fieldlab render`, so a render of the stored field is bit-identical)."""
    device = next(model.parameters(), torch.empty(0)).device
    return torch.cat([model(coords[i:i + chunk].to(device)).float().cpu() for i in range(0, len(coords), chunk)])


def field_metrics(model: Miner, config: MinerConfig, stats: PyramidStats, device: torch.device) -> dict:
    """What every MINER fit reports beside its quality: sizes, blocks and memory."""
    params = sum(p.numel() for p in model.parameters())
    counts = model.block_counts()
    return {
        "params": params, "params_all_blocks": config.replace(blocks=()).num_params(),
        "field_bytes": params * 4 + sum(len(level) * 8 for level in model.levels),
        "blocks_per_scale": [a for a, _ in counts], "blocks_total_per_scale": [t for _, t in counts],
        "blocks_pruned_per_scale": stats.pruned_per_scale, "blocks_retired_per_scale": stats.retired_per_scale,
        "steps": stats.steps, "seconds": round(stats.seconds, 3), "device": str(device),
        "peak_memory_bytes": stats.peak_memory_bytes, "precision": stats.precision, "kernel": stats.kernel,
        "streaming": stats.streaming, "device_budget_bytes": stats.device_budget_bytes,
        "max_target_blocks_on_device": stats.max_target_blocks_on_device,
        "pyramid_bytes": stats.pyramid_bytes, "pyramid_host_bytes": stats.pyramid_bytes if stats.streaming else 0,
        **stats.time_limit,
    }


def fit(signal: Signal, config: MinerConfig, fit_config: FitConfig = FitConfig(), *,
        train: MinerTrainConfig = MinerTrainConfig(), log_path: Path | None = None,
        tensorboard_dir: Path | None = None, progress: bool = False, checkpoint: Path | None = None,
        resume: bool = False, identity: str = "") -> MinerFitResult:
    """`fieldlab.fit.fit` for MINER: same arguments and result, plus the active-blocks picture; `train`: how
    the blocks are pruned, retired and placed in memory. `checkpoint`, `resume`, `identity`: as `fit`'s
    (`fit.miner_resume` says what is kept and when)."""
    saves = PyramidCheckpoints.open(checkpoint, identity, resume)
    model, stats = fit_pyramid(signal.values, config, fit_config, train=train, log_path=log_path,
                               progress=progress, tensorboard_dir=tensorboard_dir, checkpoints=saves)
    config = config.adapt(signal.shape).replace(blocks=tuple(len(level) for level in model.levels))
    prediction = predict(model, signal.coords()).reshape(*signal.shape, -1)
    metrics = metrics_for(signal.info.kind, prediction, signal.values)
    metrics.update(field_metrics(model, config, stats, resolve_device(fit_config.device)))
    files = {"blocks.png": lambda path: write_block_picture(path, model, prediction)} if signal.info.in_dim in (2, 3) else {}
    return MinerFitResult(field=model.cpu(), config=config, metrics=metrics, prediction=prediction, extra_files=files)


# -- the active-blocks picture --------------------------------------------------------------------
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240]])


def block_picture(model: Miner, background: torch.Tensor | None = None, max_side: int = 512) -> np.ndarray:
    """(h, J·w, 3) uint8: one panel per scale (coarsest left) with its active blocks tinted on a dimmed
    background (the reconstruction, or the first axis' maximum of a volume) and every block outlined,
    as in the MINER paper's block-decomposition figure."""
    shape = model.padded if model.net.in_dim == 2 else model.padded[1:]
    factor = max(1, math.ceil(max(shape) / max_side))
    h, w = shape[0] // factor, shape[1] // factor
    if background is None:
        base = np.full((h, w), 0.5)
    else:
        image = background.float()
        image = image.amax(dim=0) if model.net.in_dim == 3 else image  # a volume: the view down the first axis
        grey = ((image.mean(-1) + 1) / 2).clamp(0, 1).numpy()
        padded = np.pad(grey, [(0, a - b) for a, b in zip(shape, grey.shape)], mode="edge")
        base = padded[::factor, ::factor][:h, :w]
    panels = []
    for s, level in enumerate(model.levels):
        per_axis = model.blocks_per_axis(s)
        active = np.zeros(math.prod(per_axis), dtype=bool)
        active[level.index.cpu().numpy()] = True
        active = active.reshape(per_axis)
        if model.net.in_dim == 3:
            active = active.any(axis=0)
        cell = model.extent(s) / factor
        rows = np.minimum((np.arange(h) / cell).astype(int), active.shape[0] - 1)
        cols = np.minimum((np.arange(w) / cell).astype(int), active.shape[1] - 1)
        mask = active[rows][:, cols]
        colour = PALETTE[s % len(PALETTE)]
        panel = (0.35 * base[..., None] * 255).repeat(3, -1)
        panel[mask] = 0.5 * panel[mask] + 0.5 * colour
        if cell >= 3:  # block outlines
            panel[(np.arange(h) % cell) < 1] = 255
            panel[:, (np.arange(w) % cell) < 1] = 255
        panels.append(panel)
        panels.append(np.full((h, 4, 3), 255.0))
    return np.concatenate(panels[:-1], axis=1).clip(0, 255).astype(np.uint8)


def write_block_picture(path: Path, model: Miner, background: torch.Tensor | None = None) -> None:
    """blocks.png: the block picture with a legend (scale → colour, blocks active) and a title; the bare
    picture when matplotlib is missing."""
    import imageio.v3 as iio

    from fieldlab.plots import write_blocks_figure

    picture = block_picture(model, background)
    kept = [(len(level), math.prod(model.blocks_per_axis(s))) for s, level in enumerate(model.levels)]
    title = f"MINER's blocks per scale, coarsest left: {sum(a for a, _ in kept):,} of {sum(t for _, t in kept):,} active"
    if not write_blocks_figure(picture, PALETTE.tolist(), kept, path, title=title):
        iio.imwrite(path, picture)


register_engine(MinerConfig, OwnEngine(fit=fit, fit_mesh=fit_mesh, options=MinerTrainConfig))
