"""MINER: multiscale block fields (Saragadam et al., "MINER: Multiscale Implicit Neural Representations",
ECCV 2022, https://arxiv.org/abs/2202.03532).

The field is a sum over scales s = 0 (coarsest) … J-1 (finest) of block-wise functions: scale s cuts the
signal's grid (padded to a whole number of coarsest blocks) into blocks of `block_size` samples of that
scale per axis, i.e. `block_size · 2^(J-1-s)` samples of the signal; each *active* block owns a tiny MLP
on its own local coordinates in [-1, 1]^d. Blocks without a network contribute 0. All blocks of a scale
are one batched matmul over compacted parameters (p, in, out): only active blocks are stored.

    value(x) = Σ_s  MLP_{s, block_s(x)}( local_s(x) )

Because every scale is a function of continuous coordinates, the field renders at any resolution and
region; `fit/miner.py` fits the coarsest scale to the signal and each finer one to what is left.

Shape letters: n points, d coordinate dims, p blocks, m points per block, h hidden width, c channels.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn

from fieldlab._errors import UserError
from fieldlab._precision import exact_linear, full
from fieldlab._validate import LIMITS, check_shape
from fieldlab.fields._config import FieldConfig, per_item_side
from fieldlab.fields._partitioned import tile_layout, tile_size
from fieldlab.fields._registry import register_field
from fieldlab.kernels import FusedSpec

MAX_SCALES = 12
MIN_WIDTH = 8
"""The narrowest block network that sizing to a parameter budget picks at the default block side; below it
the blocks grow instead. On bach.wav (0.25 s, 2000 steps, at most a parameter per sample) 3×8 blocks of 307
samples reached SNR 16.2 dB, 3×6 of 188 16.6 dB, 3×4 of 100 13.7 dB and 3×1 of 32 (the old choice) 7.8 dB;
8 rather than 6 keeps a margin from that fall."""


@dataclasses.dataclass(frozen=True)
class BlockNet:
    """One architecture shared by every block of a scale, evaluated on stacked per-block parameters.

    Parameters are plain tensors with a leading blocks dimension, so the trainer can compact them (drop
    retired blocks) without touching this code: w{l} (p, in, out), b{l} (p, 1, out), and for Gaussian
    activations a (p, num_layers) widths.
    """

    in_dim: int
    out_dim: int
    hidden_dim: int
    num_layers: int
    activation: str
    omega0: float
    frequencies: int

    @property
    def encoded_dim(self) -> int:
        return self.in_dim * (1 + 2 * self.frequencies)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-block parameter shapes (without the blocks dimension)."""
        dims = [self.encoded_dim] + [self.hidden_dim] * self.num_layers + [self.out_dim]
        shapes = {}
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            shapes[f"w{i}"], shapes[f"b{i}"] = (a, b), (1, b)
        if self.activation == "gauss":
            shapes["a"] = (self.num_layers,)
        return shapes

    def params_per_block(self) -> int:
        return sum(math.prod(s) for s in self.shapes().values())

    @torch.no_grad()
    def init(self, p: int, *, scale: int, device=None) -> dict[str, torch.Tensor]:
        """Fresh parameters for p blocks. Sine: SIREN's initialisation; Gaussian: PyTorch's linear default
        with widths 0.1 (MINER_pl). The head shrinks by 2^-scale (the official code): finer scales fit
        smaller residuals."""
        params = {}
        last = self.num_layers
        for name, shape in self.shapes().items():
            if name == "a":
                params[name] = torch.full((p, *shape), 0.1, device=device)
                continue
            fan_in = self.shapes()[f"w{name[1:]}"][0]
            layer = int(name[1:])
            if name.startswith("b") or self.activation == "gauss":
                bound = 1 / math.sqrt(fan_in)
            elif layer == 0:
                bound = 1 / fan_in
            else:
                bound = math.sqrt(6 / fan_in) / self.omega0
            if layer == last and name.startswith("w"):
                bound *= 2.0 ** -scale
            params[name] = torch.empty((p, *shape), device=device).uniform_(-bound, bound)
        return params

    # -- the fused kernel's view of the blocks (fit/miner.py steps sine blocks with it) ------------------
    def fused_spec(self) -> FusedSpec | None:
        """The fused kernel's description of one block's network, or None: it runs sine blocks (its Gaussian
        activation has a fixed width, not the learned one here)."""
        if self.activation != "sine":
            return None
        return FusedSpec(self.in_dim, self.hidden_dim, self.out_dim, self.num_layers, "sine", float(self.omega0),
                         float(self.omega0), encoding="positional" if self.frequencies else "none",
                         frequencies=self.in_dim * self.frequencies)

    def fused_buffers(self) -> dict[str, torch.Tensor]:
        """The encoding's scales π 2^i under the name the kernel's packing reads (none without an encoding)."""
        return {"encoding.scales": self._scales()} if self.frequencies else {}

    def _scales(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """The encoding's angular frequencies π 2^i, i < F."""
        return math.pi * 2.0 ** torch.arange(self.frequencies, device=device, dtype=dtype)

    def to_fused(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Block parameters {w{l} (p, in, out), b{l} (p, 1, out)} → the kernel's stacked module names
        {"layers.l.weight" (p, out, in), "layers.l.bias" (p, out)}. The kernel's encoding is [x, cos, sin],
        this one's [x, sin, cos]: the first weight's cosine and sine rows swap places (both ways alike)."""
        named = {}
        for i in range(self.num_layers + 1):
            weight = params[f"w{i}"]
            if i == 0 and self.frequencies:
                weight = self._swap_encoding_rows(weight)
            named[f"layers.{i}.weight"], named[f"layers.{i}.bias"] = weight.transpose(1, 2), params[f"b{i}"][:, 0]
        return named

    def from_fused(self, named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse of `to_fused`."""
        params = {}
        for i in range(self.num_layers + 1):
            weight = named[f"layers.{i}.weight"].transpose(1, 2)
            if i == 0 and self.frequencies:
                weight = self._swap_encoding_rows(weight)
            params[f"w{i}"], params[f"b{i}"] = weight.contiguous(), named[f"layers.{i}.bias"][:, None].contiguous()
        return params

    def _swap_encoding_rows(self, weight: torch.Tensor) -> torch.Tensor:
        d, f = self.in_dim, self.in_dim * self.frequencies
        return torch.cat([weight[:, :d], weight[:, d + f:], weight[:, d:d + f]], dim=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Positional encoding [x, sin(2^i π x), cos(2^i π x)]_{i<F} of local coordinates (…, d)."""
        if not self.frequencies:
            return x
        phases = (x[..., None] * self._scales(x.device, x.dtype)).flatten(-2)
        return torch.cat([x, torch.sin(phases), torch.cos(phases)], dim=-1)

    def __call__(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Values (p, m, c) of p blocks at local coordinates x (p, m, d) (or (1, m, d), shared), in fp32.

        The first layer's outputs are phases (ω₀ z): it is elementwise products in fp32 (a few input
        columns), never a TF32 or bf16 matmul. Under bf16 autocast only the hidden h×h layers run in bf16;
        activations and the head (whose outputs are the values themselves) stay in fp32."""
        # w0 (p, in, h) viewed as (p, in, 1, h): its column j is (p, 1, h), times x's (p, m, 1)
        x = self._activate(exact_linear(self.encode(full(x)), params["w0"][:, :, None], params["b0"]), params, 0)
        for i in range(1, self.num_layers):
            x = self._activate(torch.baddbmm(params[f"b{i}"], x, params[f"w{i}"]), params, i)
        last = self.num_layers
        with torch.autocast(x.device.type, enabled=False):
            return torch.baddbmm(params[f"b{last}"], full(x), params[f"w{last}"])

    def _activate(self, z: torch.Tensor, params: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
        """The activation after hidden layer `layer`, evaluated in fp32 (bf16 phases would be too coarse)."""
        z = full(z)
        if self.activation == "sine":
            return torch.sin(self.omega0 * z)
        a = params["a"][:, layer, None, None]
        return torch.exp(-0.5 * (z / a).square())


class MinerScale(nn.Module):
    """The active blocks of one scale: their flat block indices (p,) and stacked parameters."""

    def __init__(self, net: BlockNet, num_blocks: int, total_blocks: int, scale: int):
        super().__init__()
        self.net, self.total_blocks = net, total_blocks
        self.register_buffer("index", torch.arange(num_blocks, dtype=torch.int64))
        self.params = nn.ParameterDict({k: nn.Parameter(v) for k, v in net.init(num_blocks, scale=scale).items()})

    def __len__(self) -> int:
        return self.index.numel()

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.params.items())

    def assign(self, index: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
        """Replace the blocks (used by the trainer and by crop): any number of blocks, any order."""
        self.index = index.to(torch.int64).clone()
        self.params = nn.ParameterDict({k: nn.Parameter(v.detach().clone()) for k, v in params.items()})

    def slots(self) -> torch.Tensor:
        """Flat block index → slot in the parameters, -1 where a block has no network."""
        table = torch.full((self.total_blocks,), -1, dtype=torch.int64, device=self.index.device)
        # out of place, so a stack of fields (each with its own index) can vmap it
        return table.scatter(0, self.index, torch.arange(len(self), device=self.index.device))

    @property
    def full(self) -> bool:
        """Whether every block of the scale has a network (so routing never leaves a point out)."""
        return len(self) == self.total_blocks


class Miner(nn.Module):
    """A pyramid of block fields over a signal grid `shape`; `forward(coords (…, d)) -> (…, c)`."""

    def __init__(self, *, in_dim: int, out_dim: int, shape: tuple[int, ...], scales: int, block_size: int,
                 hidden_dim: int, num_layers: int, activation: str, omega0: float, frequencies: int,
                 blocks: tuple[int, ...]):
        super().__init__()
        self.shape, self.num_scales, self.block_size = tuple(shape), scales, block_size
        self.net = BlockNet(in_dim, out_dim, hidden_dim, num_layers, activation, omega0, frequencies)
        coarsest = block_size * 2 ** (scales - 1)
        self.padded = tuple(-(-n // coarsest) * coarsest for n in self.shape)
        totals = [math.prod(self.blocks_per_axis(s)) for s in range(scales)]
        counts = blocks or totals
        self.levels = nn.ModuleList(MinerScale(self.net, counts[s], totals[s], s) for s in range(scales))

    # -- geometry -------------------------------------------------------------------------------
    def extent(self, scale: int) -> int:
        """Side of a block of `scale`, in samples of the signal."""
        return self.block_size * 2 ** (self.num_scales - 1 - scale)

    def blocks_per_axis(self, scale: int) -> tuple[int, ...]:
        return tuple(n // self.extent(scale) for n in self.padded)

    def locate(self, coords: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat block index (n,) and local coordinates (n, d) in [-1, 1] of canonical coords (n, d)."""
        size = torch.tensor(self.shape, dtype=coords.dtype, device=coords.device)
        samples = (coords + 1) / 2 * size  # signal sample units; sample i is centred at i + 0.5
        extent = self.extent(scale)
        per_axis = torch.tensor(self.blocks_per_axis(scale), device=coords.device)
        block = torch.div(samples, extent, rounding_mode="floor").long()
        block = torch.minimum(block.clamp(min=0), per_axis - 1)  # points off the grid use the edge block
        local = 2 * (samples - block * extent) / extent - 1
        strides = torch.cumprod(torch.flip(per_axis, [0]), 0).flip(0).roll(-1)
        strides[-1] = 1
        return (block * strides).sum(-1), local

    # -- evaluation -----------------------------------------------------------------------------
    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.evaluate(coords, range(self.num_scales))

    def evaluate(self, coords: torch.Tensor, scales) -> torch.Tensor:
        """The sum of the given scales at canonical coords (…, d): blocks are grouped by sorting points,
        so each group of points runs through its own block's weights in one batched matmul. A scale whose
        blocks all have networks takes the tiled layout instead, whose shapes depend only on the number
        of points: that is the batched path (`FieldStack`'s vmap) of a store of unpruned fields."""
        lead = coords.shape[:-1]
        x = coords.reshape(-1, coords.shape[-1])
        out = x.new_zeros(x.shape[0], self.net.out_dim)
        for s in scales:
            level = self.levels[s]
            if not len(level):
                continue
            if level.full:
                out = out + self._tiled(x, s).to(out.dtype)
                continue
            flat, local = self.locate(x, s)
            slot = level.slots()[flat]
            inside = torch.nonzero(slot >= 0).squeeze(1)
            if not inside.numel():
                continue
            used, group = torch.unique(slot[inside], return_inverse=True)
            order = torch.argsort(group)
            group = group[order]
            points = inside[order]
            counts = torch.bincount(group, minlength=len(used))
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(len(group), device=x.device) - starts[group]
            packed = x.new_zeros(len(used), int(counts.max()), x.shape[1])  # (p, m, d), padded per block
            packed[group, rank] = local[points]
            params = {k: v[used] for k, v in level.tensors().items()}
            values = self.net(params, packed)
            out = out.index_add(0, points, values[group, rank].to(out.dtype))
        return out.reshape(*lead, -1)

    def _tiled(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """Values (n, c) of a full scale at points x (n, d): tiles of t points of one block each, so one
        batched matmul with shapes fixed by n and the block count (r tiles; see `_partitioned`)."""
        level = self.levels[scale]
        flat, local = self.locate(x, scale)
        tile = tile_size(x.shape[0], len(level))
        src, pos, tile_slot = tile_layout(level.slots()[flat], len(level), tile)
        padded = torch.cat([local, local.new_zeros(1, local.shape[1])])[src].view(-1, tile, local.shape[1])  # (r, t, d)
        values = self.net({k: v[tile_slot] for k, v in level.tensors().items()}, padded)  # (r, t, c)
        return values.reshape(-1, values.shape[-1])[pos]

    # -- description ----------------------------------------------------------------------------
    def block_counts(self) -> list[tuple[int, int]]:
        """(active, total) blocks per scale, coarsest first."""
        return [(len(level), level.total_blocks) for level in self.levels]

    def describe(self) -> list[str]:
        """Lines `fieldlab info` prints for this field."""
        counts = self.block_counts()
        active, total = sum(a for a, _ in counts), sum(t for _, t in counts)
        per_scale = ", ".join(f"{s}: {a}/{t}" for s, (a, t) in enumerate(counts))
        return [f"blocks    per scale (coarsest first) {per_scale}; {active} of {total} blocks have a network "
                f"({self.net.params_per_block()} parameters each)"]


@register_field("miner")
@dataclasses.dataclass(frozen=True)
class MinerConfig(FieldConfig):
    """Multiscale blocks of tiny MLPs (MINER), pruned and fitted coarse to fine by their own trainer."""

    part_noun: ClassVar[str] = "blocks"
    """What `fieldlab crop` calls the parts it keeps or removes."""

    scales: int = 3
    """Number of pyramid scales; each finer scale has 2^d times as many blocks."""
    block_size: int = 0
    """Samples per block side at every scale; 0 picks 32 for 1D/2D signals and 16 for 3D, or more where a
    parameter budget would leave blocks narrower than `MIN_WIDTH` (`with_params`)."""
    hidden_dim: int = 18
    """Width of every block's MLP."""
    num_layers: int = 3
    """Activated layers of every block's MLP; a linear head follows."""
    activation: Literal["sine", "gauss"] = "sine"
    """sine (official MINER) or gauss, exp(-z²/2a²) with a trainable width a per block and layer (MINER_pl)."""
    omega0: float = 30.0
    """Frequency factor of the sine activations."""
    frequencies: int = 0
    """Positional-encoding octaves of the local coordinates (MINER_pl uses 4); 0: none."""
    parent_init: bool = False
    """Start each new block from its parent's hidden layers, re-parameterised to the child's coordinates,
    with a zero head (the official code's weight sharing, made exact)."""
    shape: tuple[int, ...] = ()
    """The signal's sample grid (set from the signal)."""
    blocks: tuple[int, ...] = ()
    """Active blocks per scale, coarsest first (set by fitting); empty: every block."""

    lr = 2e-3
    may_be_zero = ("block_size", "frequencies")
    resolved = ("shape", "blocks")
    # One signal is grown (and pruned) by its own engine (registered in fit/); a dataset's fields keep
    # every block, so they share one layout, stack, and fit and evaluate through the batched path like any
    # other field.
    batched: ClassVar[bool] = True
    maxima = {**FieldConfig.maxima, "scales": MAX_SCALES}
    former_options: ClassVar[tuple[str, ...]] = ("threshold", "prune_mse", "stop_mse", "check_every", "streaming",
                                                 "device_budget")
    """Training options (pruning, retirement, memory) that this config held before they moved to its engine's
    training config in fit/: an older field.json holds them; reading it ignores them (they do not change the
    field)."""

    @classmethod
    def from_dict(cls, data: dict) -> MinerConfig:
        return super().from_dict({k: v for k, v in data.items() if k not in cls.former_options})

    def resolved_block_size(self) -> int:
        return self.block_size or (16 if self.in_dim >= 3 else 32)

    def resolved_shape(self) -> tuple[int, ...]:
        """The grid, or (without a signal) one coarsest block per axis."""
        return self.shape or (self.resolved_block_size() * 2 ** (self.scales - 1),) * self.in_dim

    def validate(self) -> None:
        super().validate()  # maxima bound --scales by MAX_SCALES
        if self.shape and (len(self.shape) != self.in_dim or min(self.shape) < 1):
            raise UserError(f"--shape needs {self.in_dim} positive sizes, got {self.shape}")
        if self.shape:  # the pyramid has a block per cell of the grid: bounded before any is counted
            check_shape(self.shape, "--shape")
        if self.omega0 <= 0:
            raise UserError(f"--omega0 must be positive, got {self.omega0}")
        if self.blocks and len(self.blocks) != self.scales:
            raise UserError(f"--blocks needs one count per scale ({self.scales}), got {len(self.blocks)}")
        coarsest = self.resolved_block_size() * 2 ** (self.scales - 1)
        if self.shape and coarsest > 8 * max(self.shape):  # the grid is padded to whole coarsest blocks
            fits = max(1, int(math.log2(8 * max(self.shape) / self.resolved_block_size())) + 1)
            raise UserError(f"--scales {self.scales} of {self.resolved_block_size()}-sample blocks pads this "
                            f"{'x'.join(map(str, self.shape))} grid to {coarsest} samples per axis; use --scales "
                            f"{fits} or fewer, or a smaller --block-size")
        if self.blocks and self.shape:  # counts are checked once the grid is known
            if len(self.blocks) != self.scales:
                raise UserError(f"--blocks needs one count per scale ({self.scales}), got {len(self.blocks)}")
            module = self._module(meta=True, blocks=())
            for s, (count, level) in enumerate(zip(self.blocks, module.levels)):
                if not 0 <= count <= level.total_blocks:
                    raise UserError(f"--blocks {count} at scale {s} is not between 0 and {level.total_blocks}")

    def adapt(self, shape: tuple[int, ...]) -> MinerConfig:
        return self.replace(shape=tuple(shape))

    def item_defaults(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """Blocks sized so that one coarsest block covers an item (the whole-photo default of 32 samples
        would pad a digit 64-fold), and ω₀ 2 per 8 samples (a block's side in samples grows with the item): on
        8×8 validation photos ω₀ 30 is noise between the centres (14.4 dB against the 32×32 photo, bicubic
        23.0) and ω₀ 2 gives 22.2 dB at a 50.6 dB fit (benchmarks/bandwidth_sweep.py)."""
        return {"block_size": max(1, -(-max(shape) // 2 ** (self.scales - 1))),
                "omega0": per_item_side(2.0, shape, type(self).omega0)}

    def with_params(self, target: int) -> MinerConfig:
        """Solve `hidden_dim`; a pyramid of many blocks moves in coarse steps at small widths, so when the
        closest count is more than 5% off, fewer activated layers are tried too. A width below `MIN_WIDTH`
        is no network at all (a 1-wide sine block fitted bach.wav at SNR −17.6 dB, worse than silence), so
        there, where the block side is the default's, the blocks grow instead (`_with_grown_blocks`)."""
        best = super().with_params(target)
        for layers in range(self.num_layers - 1, 0, -1):
            if abs(best.num_params() - target) <= 0.05 * target:
                break
            other = super(MinerConfig, self.replace(num_layers=layers)).with_params(target)
            if abs(other.num_params() - target) < abs(best.num_params() - target):
                best = other
        if best.hidden_dim >= MIN_WIDTH or self.block_size or not self.shape:
            return best
        return self._with_grown_blocks(target) or best

    def _with_grown_blocks(self, target: int) -> MinerConfig | None:
        """`MIN_WIDTH` wide blocks of the smallest side whose pyramid has at most `target` parameters, or None
        when even the largest side `validate` allows has more. The count never rises with the side (each
        scale's blocks, ⌈n / coarsest⌉ · 2^s per axis, never grow in number), so the side is bisected."""
        narrow = self.replace(hidden_dim=MIN_WIDTH)
        lo = self.resolved_block_size() - 1  # below the default side: it is a candidate too
        hi = min(8 * max(self.shape) // 2 ** (self.scales - 1), LIMITS.width)  # the largest validate accepts
        if hi <= lo or narrow.replace(block_size=hi).num_params() > target:
            return None
        while hi - lo > 1:  # the answer is in (lo, hi]
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if narrow.replace(block_size=mid).num_params() <= target else (mid, hi)
        return narrow.replace(block_size=hi)

    def _module(self, *, meta: bool = False, blocks=None) -> Miner:
        kwargs = dict(in_dim=self.in_dim, out_dim=self.out_dim, shape=self.resolved_shape(), scales=self.scales,
                      block_size=self.resolved_block_size(), hidden_dim=self.hidden_dim, num_layers=self.num_layers,
                      activation=self.activation, omega0=self.omega0, frequencies=self.frequencies,
                      blocks=self.blocks if blocks is None else blocks)
        if meta:
            with torch.device("meta"):
                return Miner(**kwargs)
        return Miner(**kwargs)

    def build(self) -> Miner:
        return self._module()

    # -- the crop protocol (edit/crop.py) -----------------------------------------------------------
    # A part is one active block; parts are numbered scale by scale (coarsest first), each scale's in the
    # order its parameters are stored. Blocks live in the state (`levels.{s}.index`), the config holds
    # only their counts, so `part_boxes` needs the state too.
    @property
    def num_parts(self) -> int:
        return sum(self.blocks) if self.blocks else sum(t for _, t in self._module(meta=True).block_counts())

    def _block_indices(self, state: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [state[f"levels.{s}.index"].cpu() for s in range(self.scales)]

    def part_boxes(self, state: dict[str, torch.Tensor]) -> list[tuple[tuple[int, int], ...]]:
        """Each active block's box in frame samples (the padded grid may reach past the signal's end)."""
        geometry = self._module(meta=True, blocks=())
        boxes = []
        for s, index in enumerate(self._block_indices(state)):
            extent, per_axis = geometry.extent(s), geometry.blocks_per_axis(s)
            for flat in index.tolist():
                corner = []
                for n in reversed(per_axis):
                    corner.append(flat % n)
                    flat //= n
                boxes.append(tuple((c * extent, (c + 1) * extent) for c in reversed(corner)))
        return boxes

    def part_scales(self, state: dict[str, torch.Tensor]) -> list[int]:
        """Each part's scale (0 the coarsest), in `part_boxes` order: parts of different scales overlap, each
        sample summing one block of every scale (`edit.crop.removal_summary` says what a removal leaves)."""
        return [s for s, index in enumerate(self._block_indices(state)) for _ in range(len(index))]

    def _keeping(self, state: dict[str, torch.Tensor], keep: list[torch.Tensor]) -> tuple[MinerConfig, dict]:
        """The field with only the blocks whose positions (per scale, into the stored order) are in `keep`;
        their relative order is kept, so the grouped evaluation packs the kept blocks exactly as before."""
        new_state = {}
        for key, value in state.items():
            scale = int(key.split(".")[1])
            new_state[key] = value.index_select(0, keep[scale].to(value.device)).clone()
        return self.replace(blocks=tuple(len(k) for k in keep)), new_state

    def without_parts(self, state: dict[str, torch.Tensor], parts: list[int]) -> tuple[MinerConfig, dict]:
        """Delete the blocks with these part numbers (`part_boxes` order); their points get 0 from that scale."""
        counts = [len(index) for index in self._block_indices(state)]
        total = sum(counts)
        bad = [p for p in parts if not 0 <= p < total]
        if bad:
            raise UserError(f"--remove: block {bad[0]} does not exist (this field has blocks 0..{total - 1})")
        drop = set(parts)
        if len(drop) == total:
            raise UserError("--remove would delete every block")
        keep, start = [], 0
        for count in counts:
            keep.append(torch.tensor([i for i in range(count) if start + i not in drop], dtype=torch.int64))
            start += count
        return self._keeping(state, keep)

    def cropped(self, state: dict[str, torch.Tensor], box) -> tuple[MinerConfig, dict]:
        """Keep, at every scale, the blocks that some point of `box` (frame samples, [lo, hi) per axis) is
        routed to; a box that cuts through a block keeps it whole. Routing clamps points off the padded
        grid to its edge blocks, so the box is clamped the same way; block k of a scale covers
        [k e, (k + 1) e) and a point x goes to floor(x / e), so [lo, hi) reaches blocks lo // e .. (hi - 1) // e."""
        geometry = self._module(meta=True, blocks=())
        keep = []
        for s, index in enumerate(self._block_indices(state)):
            extent, per_axis = geometry.extent(s), geometry.blocks_per_axis(s)
            reach = [(min(max(lo // extent, 0), n - 1), min(max((hi - 1) // extent, 0), n - 1))
                     for (lo, hi), n in zip(box, per_axis)]
            corner = index.clone()
            inside = torch.ones(len(index), dtype=torch.bool)
            for (first, last), n in zip(reversed(reach), reversed(per_axis)):
                c = corner % n
                inside &= (c >= first) & (c <= last)
                corner = torch.div(corner, n, rounding_mode="floor")
            keep.append(torch.nonzero(inside).squeeze(1))
        return self._keeping(state, keep)
