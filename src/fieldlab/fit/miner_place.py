"""Where MINER's training data lives and how much of it is on the device at once (--streaming, --device-budget).

A fit always keeps on the device the parameters of the blocks it trains (with their gradients and Adam's
two moments), the blocks already fitted at coarser scales, the targets of the blocks in the chunk being
trained, and that chunk's activations. Without streaming the pyramid and every residual are on the device
too; with streaming they stay in host memory (pinned on CUDA) and only chunks of blocks' targets move.

Under a finite budget the sizes of the chunks are planned so that this estimate fits, once per scale for
the residual pass (every block of the scale) and again for training (the blocks that got a network).
Estimates are meant as upper bounds in fp32 bytes (checked on an H100 against
`torch.cuda.max_memory_allocated`, which the fit reports).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from fieldlab.fields.miner import Miner

if TYPE_CHECKING:
    from fieldlab.fit.miner import MinerTrainConfig

POINTS_PER_CHUNK = 2**21
"""Block samples per forward/backward chunk when the budget allows it (fastest on an H100)."""
MIN_POINTS_PER_CHUNK = 2**14
"""The smallest chunk a tight budget may ask for."""
BUDGET_FRACTION = 0.8
"""The default --device-budget on CUDA: this share of the free device memory."""


class Placement:
    """Where the pyramid and residuals live (`storage`: the device, or host memory when streaming), how many
    block samples go through the network at once (`points`) and how many blocks' targets may be on the
    device at once (`max_blocks`); counts the most blocks it ever moved there."""

    def __init__(self, device: torch.device, *, streaming: bool = False, budget: float = math.inf):
        self.device, self.streaming, self.budget = device, streaming, budget
        self.storage = torch.device("cpu") if streaming else device
        self.points = POINTS_PER_CHUNK
        self.max_blocks = 2**62
        self.targets_on_device = not streaming  # a scale's training targets (`plan` decides when streaming)
        self.peak_blocks = 0

    def load(self, blocks: torch.Tensor) -> torch.Tensor:
        """Block targets (q, m, c) onto the device (non-blocking from pinned memory)."""
        self.peak_blocks = max(self.peak_blocks, blocks.shape[0])
        return blocks.to(self.device, non_blocking=True)

    def keep(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor into storage: pinned host memory when streaming to CUDA (fast, asynchronous copies)."""
        tensor = tensor.to(self.storage)
        return tensor.pin_memory() if self.streaming and self.device.type == "cuda" else tensor

    def plan(self, model: Miner, channels: int, blocks: int, resident: int = 0, *, training: bool = True,
             margin: int = 0) -> None:
        """Chunk sizes for training `blocks` blocks of one scale (parameters, gradients and Adam's state
        counted for each, each block's targets `margin` samples per side beyond its own) with `resident` bytes of
        data already on the device; nothing under no budget.

        Streaming, training: when the blocks' targets take at most half the room they go to the device
        once (`targets_on_device`) and the rest is for activations; else chunks of blocks move every step.
        `training=False` plans the residual pass (no gradients): half the room for a chunk of blocks (their
        targets, the coarser scales' sum and the temporaries of the subtraction: 5 copies), half for the
        transient activations of `points` samples."""
        self.targets_on_device = not self.streaming
        if math.isinf(self.budget):
            self.targets_on_device = True
            return
        room = self.budget - resident - stored_bytes(model) - parameter_bytes(model, blocks)
        samples = trained_samples(model, margin if training else 0)
        block_bytes = samples * channels * 4
        if not self.streaming:
            self.points = chunk_points(room, activation_bytes(model, 1))
        elif not training:
            self.max_blocks = max(1, int(room / 2 // (5 * block_bytes)))
            self.points = chunk_points(room / 2, 3 * model.net.hidden_dim * 4)
        elif blocks * block_bytes <= room / 2:
            self.targets_on_device, self.max_blocks = True, 2**62
            self.points = chunk_points(room - blocks * block_bytes, activation_bytes(model, 1))
        else:
            self.max_blocks = max(1, int(room // streamed_block_bytes(model, channels, margin)))
            self.points = min(POINTS_PER_CHUNK, self.max_blocks * samples)


def chunk_points(room: float, per_point: int) -> int:
    """Block samples per chunk that `room` bytes allow, between the smallest and the fastest chunk."""
    return int(min(POINTS_PER_CHUNK, max(MIN_POINTS_PER_CHUNK, room // per_point)))


def scale_bytes(model: Miner, channels: int, scale: int) -> int:
    """fp32 bytes of one scale's samples (the padded grid at that scale)."""
    shrink = 2 ** (model.net.in_dim * (model.num_scales - 1 - scale))
    return math.prod(model.padded) * channels * 4 // shrink


def pyramid_bytes(model: Miner, channels: int) -> int:
    return sum(scale_bytes(model, channels, s) for s in range(model.num_scales))


def data_bytes(model: Miner, channels: int) -> int:
    """The pyramid and three copies of the finest targets (blocks, residual, training targets)."""
    return pyramid_bytes(model, channels) + 3 * scale_bytes(model, channels, model.num_scales - 1)


def resident_bytes(model: Miner, channels: int, points: int = POINTS_PER_CHUNK) -> int:
    """A rough upper estimate of the device bytes of a fit that keeps everything on the device: its data,
    every finest block's parameters with their Adam state, and one chunk's activations."""
    finest = model.num_scales - 1
    points = min(points, math.prod(model.padded))  # a chunk is never larger than the finest scale
    return (data_bytes(model, channels) + parameter_bytes(model, math.prod(model.blocks_per_axis(finest)))
            + activation_bytes(model, points))


def parameter_bytes(model: Miner, blocks: int) -> int:
    """`blocks` blocks' parameters, gradients, Adam's two moments, and two transient full-size gradients (the
    backward pass of a chunk's slice of the parameters, and its accumulation)."""
    return 6 * model.net.params_per_block() * blocks * 4


def stored_bytes(model: Miner) -> int:
    """The blocks fitted so far (they stay on the device: finer scales evaluate them)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def activation_bytes(model: Miner, points: int) -> int:
    """What a forward/backward pass keeps per chunk of `points` block samples: pre- and post-activations,
    and three (points, hidden) gradients alive at once in the backward pass."""
    return points * (2 * model.net.num_layers + 4) * model.net.hidden_dim * 4


def trained_samples(model: Miner, margin: int = 0) -> int:
    """Samples a training block's targets hold: its own and `margin` more per side."""
    return (model.block_size + 2 * margin) ** model.net.in_dim


def streamed_block_bytes(model: Miner, channels: int, margin: int = 0) -> int:
    """Device bytes per block a streaming fit moves at once: its targets, a working copy, its activations."""
    samples = trained_samples(model, margin)
    return 2 * samples * channels * 4 + activation_bytes(model, samples)


def placement(train: MinerTrainConfig, model: Miner, channels: int, device: torch.device) -> Placement:
    """Stream when asked to, or (auto) when even the smallest chunk of a resident fit would exceed the budget
    (--device-budget, or 80% of the free CUDA memory; unlimited on the CPU)."""
    streaming, budget = train.streaming, train.device_budget or math.inf
    if not train.device_budget and device.type == "cuda":
        budget = BUDGET_FRACTION * torch.cuda.mem_get_info(device)[0]
    fits = resident_bytes(model, channels, MIN_POINTS_PER_CHUNK) <= budget
    place = Placement(device, streaming=streaming == "on" or (streaming == "auto" and not fits), budget=budget)
    finest = model.num_scales - 1
    place.plan(model, channels, math.prod(model.blocks_per_axis(finest)),
               0 if place.streaming else data_bytes(model, channels))
    return place
