"""Local-Global SIRENs: croppable, extendable partitioned sine fields (Ashkenazi & Treister, "Towards
Croppable Implicit Neural Representations", NeurIPS 2024, https://arxiv.org/abs/2409.19472).

The domain is cut into an axis-aligned grid of partitions; each has its own small sine MLP (the *local*
branch). In `local-global` mode a shared sine MLP (the *global* branch) also sees every coordinate, and
after every sine layer the two are fused by concatenation, one shared linear layer and a sine:

    u_l = sin(ω (W_l^(p) h_{l-1} + b_l^(p)))        local layer of partition p (h_0 = x)
    g_l = sin(ω (G_l g_{l-1} + c_l))                 global layer (g_0 = x)
    h_l = sin(ω (A [u_l ; g_l] + a))                 fusion, A shared by all partitions and depths
    y   = W_out^(p) h_L + b_out^(p)

A point's value depends only on its own partition's weights and the shared ones, so deleting a
partition's slices crops the field exactly, and adding slices (trained against the frozen shared
weights) extends it. `local` mode is the local branch alone (a SIREN per partition).

One registered field, `local-global`, with `--mode local-global|local`: the two modes share geometry,
cropping, extension and the batched path, and `--mode` keeps `fieldlab fields` one line per family.

Letters: n points, d coordinate dims, c channels, p partitions, r tiles, t points per tile.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
import torch.nn as nn

from fieldlab._errors import UserError
from fieldlab._precision import exact_linear, full
from fieldlab._validate import LIMITS
from fieldlab.fields._config import FieldConfig, per_item_side
from fieldlab.fields._partitioned import (Box, balanced_edges, canonical_edges, cell_boxes, cell_index, grow_edges,
                                          tile_layout, tile_size)
from fieldlab.fields._registry import register_field
from fieldlab.kernels import FusedSpec

DEFAULT_COUNTS = {1: 32, 2: 16, 3: 8}
"""Partitions per axis when neither --partitions nor --partition-size is given (the paper's audio,
image and, near enough, video settings)..."""
DEFAULT_MIN_SIZE = {1: 1024, 2: 32, 3: 8}
"""...but no fewer samples per partition than this, so small signals get few partitions."""
OVERLAP_FRACTION = 16
"""A new field's training margin per axis, unless --overlap is given: its narrowest partition over this (2
samples of a 32-sample partition), none on an axis of one partition. On 128 px photos (4×4 partitions, the
README's example; BENCHMARKS.md "Local-Global at the README's size") the borders were 2.6 dB worse than the
interior without it and within 1.2 dB of it with it (a SIREN's are 1 dB worse there too); it changes only the
training points, so crops and extensions stay exact."""
HARMONIZER_LATENT, HARMONIZER_HIDDEN, GROUPS = 16, 32, ("local", "global", "fusion")
REFERENCE_WIDTHS = (14, 84)
"""Local and global widths of the paper's image setting (16×16 partitions, 206,610 parameters): with the
default partition counts they set the default parameter budget of each dimension, which unset widths keep
whatever the partition count (`LocalGlobalConfig.default_budget`)."""


class LocalGlobal(nn.Module):
    """The partitioned sine field; `forward(coords (..., d)) -> values (..., c)`.

    Coordinates with one extra last column name each point's partition slot instead of routing it by
    position (how overlapping partitions train on their neighbours' samples; see `training_points`).
    """

    def __init__(self, *, in_dim: int, out_dim: int, hidden_dim: int, global_dim: int, num_layers: int,
                 omega0: float, first_omega0: float, span: tuple[int, ...], edges: tuple[tuple[int, ...], ...],
                 cells: tuple[int, ...], use_global: bool, incode: bool, overlap: tuple[int, ...] = (),
                 blend: tuple[int, ...] = ()):
        super().__init__()
        self.in_dim, self.out_dim, self.num_layers = in_dim, out_dim, num_layers
        self.omega0, self.first_omega0 = omega0, first_omega0
        self.span, self.edges, self.cells = span, edges, cells
        self.counts = tuple(len(e) - 1 for e in edges)
        self.num_parts = max(cells) + 1
        self.has_void = min(cells) < 0
        self.use_global = use_global
        self.overlap = overlap
        self.blend_samples = _broadcast(blend or (0,), in_dim)
        self.blend = _fade_widths(self.blend_samples, span, edges)
        p, h, g = self.num_parts, hidden_dim, global_dim
        dims = [in_dim] + [h] * num_layers + [out_dim]
        self.local_weights = nn.ParameterList(nn.Parameter(torch.empty(p, a, b)) for a, b in zip(dims[:-1], dims[1:]))
        self.local_biases = nn.ParameterList(nn.Parameter(torch.empty(p, b)) for b in dims[1:])
        if use_global:
            gdims = [in_dim] + [g] * num_layers
            self.global_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(gdims[:-1], gdims[1:]))
            self.fusion = nn.Linear(h + g, h)
        if incode:
            self.harmonizer_latent = nn.Parameter(torch.empty(HARMONIZER_LATENT))
            self.harmonizer = nn.Sequential(nn.Linear(HARMONIZER_LATENT, HARMONIZER_HIDDEN), nn.ReLU(),
                                            nn.Linear(HARMONIZER_HIDDEN, 4 * len(GROUPS)))
        self.incode = incode
        for a, axis in enumerate(edges):  # routing tables, rebuilt from the config (not stored)
            self.register_buffer(f"inner_edges_{a}", torch.tensor(canonical_edges(axis, span[a]),
                                                                  dtype=torch.float64).float(), persistent=False)
        self.register_buffer("cell_slots", torch.tensor(cells, dtype=torch.long), persistent=False)
        self.reset_parameters()

    # -- initialisation -------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """SIREN's initialisation with fan-in counted per partition (the paper's choice)."""
        for i, (w, b) in enumerate(zip(self.local_weights, self.local_biases)):
            self.init_slots_(i, w, b, slice(None))
        if self.use_global:
            for i, layer in enumerate(self.global_layers):
                bound = 1.0 / layer.in_features if i == 0 else math.sqrt(6.0 / layer.in_features) / self.omega0
                layer.weight.uniform_(-bound, bound)
            bound = math.sqrt(6.0 / self.fusion.in_features) / self.omega0
            self.fusion.weight.uniform_(-bound, bound)
        if self.incode:
            self.harmonizer_latent.normal_()
            # A small head starts every sine as the plain sin(ωz) (all coefficients near 0), yet lets
            # every harmonizer weight receive a gradient from the first step.
            self.harmonizer[-1].weight.mul_(1e-2)
            self.harmonizer[-1].bias.zero_()

    @torch.no_grad()
    def init_slots_(self, layer: int, weight: torch.Tensor, bias: torch.Tensor, slots) -> None:
        """Fresh weights for partitions `slots` of local layer `layer` (also used by `extend`)."""
        fan_in = weight.shape[1]
        bound = 1.0 / fan_in if layer == 0 else math.sqrt(6.0 / fan_in) / self.omega0
        weight[slots] = torch.empty_like(weight[slots]).uniform_(-bound, bound)
        bias[slots] = torch.empty_like(bias[slots]).uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    # -- routing ----------------------------------------------------------------------------------
    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each point's partition slot (n,) and whether its cell was cropped away (n,). Points outside
        the grid belong to the nearest border cell, so the field extrapolates like any other."""
        cell = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        for a, k in enumerate(self.counts):
            inner = getattr(self, f"inner_edges_{a}")
            index = torch.searchsorted(inner, x[:, a].contiguous().to(inner.dtype), right=True)
            cell = cell * k + index
        slot = self.cell_slots[cell]
        return slot.clamp(min=0), slot < 0

    # -- evaluation -------------------------------------------------------------------------------
    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        lead = coords.shape[:-1]
        x = coords.reshape(-1, coords.shape[-1])
        void = None
        if x.shape[-1] == self.in_dim + 1:  # points that name their partition
            slot = x[:, -1].round().long()
            x = x[:, :-1]
        else:
            slot, void = self.route(x)
        y = self._at_slots(x, slot)
        if void is not None and any(self.blend):
            y = self._blended(x, y)
        if void is not None and self.has_void:
            y = y.masked_fill(void[:, None], 0.0)  # cropped-away cells render as 0
        return y.reshape(*lead, y.shape[-1])

    def _at_slots(self, x: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """Values (n, c) of points x (n, d), point i through partition slot[i]."""
        tile = tile_size(x.shape[0], self.num_parts)
        src, pos, tile_slot = tile_layout(slot, self.num_parts, tile)
        padded = torch.cat([x, x.new_zeros(1, x.shape[1])])[src].view(-1, tile, x.shape[1])  # (r, t, d)
        y = self._tiles(padded, tile_slot)
        return y.reshape(-1, y.shape[-1])[pos]  # (n, c), back in the points' order

    # -- blending -----------------------------------------------------------------------------------
    def _fades(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per point and axis (n, d): its cell index, the cell across its nearer inner edge, and that
        neighbour's weight σ (1/2 on the edge, falling smoothly to 0 at the fade width; the own cell
        has 1 - σ). On each axis the weights of two cells sum to 1: a partition of unity."""
        own, other, sigma = [], [], []
        for a, k in enumerate(self.counts):
            inner = getattr(self, f"inner_edges_{a}")
            u = x[:, a].contiguous().to(inner.dtype)
            i = torch.searchsorted(inner, u, right=True)
            far = torch.full_like(u, math.inf)
            below = torch.where(i > 0, u - inner[(i - 1).clamp(min=0)], far) if k > 1 else far
            above = torch.where(i < k - 1, inner[i.clamp(max=k - 2)] - u, far) if k > 1 else far
            up = above < below
            t = (torch.minimum(above, below) / max(self.blend[a], 1e-12)).clamp(max=1.0)
            own.append(i)
            other.append(torch.where(up, i + 1, i - 1).clamp(0, k - 1))
            sigma.append(0.5 * (1 - t * t * (3 - 2 * t)) if self.blend[a] > 0 else torch.zeros_like(u))
        return torch.stack(own, 1), torch.stack(other, 1), torch.stack(sigma, 1)

    def _blended(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Points within the fade width of an inner edge take the weighted sum of their own partition's
        value (y) and the neighbours' (every combination of own and across-the-edge cells per axis);
        cells cropped away drop out and the weights are renormalised over the rest."""
        own, other, sigma = self._fades(x)
        if _is_batched(x):  # under vmap every point takes part, so the shapes stay fixed
            near = torch.arange(x.shape[0], device=x.device)
        else:
            near = torch.nonzero((sigma > 0).any(1)).squeeze(1)
        own, other, sigma, points = own[near], other[near], sigma[near], x[near]
        combos = range(1, 2 ** self.in_dim)  # every choice of own or neighbouring cell per axis but all-own
        weights, slots = [], []
        for combo in combos:
            bits = torch.tensor([(combo >> (self.in_dim - 1 - a)) & 1 for a in range(self.in_dim)],
                                dtype=torch.bool, device=x.device)
            index = torch.where(bits, other, own)
            cell = torch.zeros_like(index[:, 0])
            for a, k in enumerate(self.counts):
                cell = cell * k + index[:, a]
            slot = self.cell_slots[cell]
            weights.append(torch.where(bits, sigma, 1 - sigma).prod(1) * (slot >= 0))
            slots.append(slot.clamp(min=0))
        values = self._at_slots(points.repeat(len(combos), 1), torch.cat(slots)).view(len(combos), -1, y.shape[-1])
        weight = torch.stack(weights)[..., None].to(values.dtype)  # (combos, m, 1)
        own_weight = (1 - sigma).prod(1)[:, None].to(values.dtype)
        mixed = (own_weight * y[near] + (weight * values).sum(0)) / (own_weight + weight.sum(0))
        return y.index_copy(0, near, mixed.to(y.dtype))

    def _coefficients(self):
        """Per group (local, global, fusion): INCODE's (a, b, c, d) for a·sin(b·ωz + c) + d."""
        if not self.incode:
            return {}
        raw = self.harmonizer(self.harmonizer_latent).view(len(GROUPS), 4)
        return dict(zip(GROUPS, raw))

    def _sine(self, z: torch.Tensor, omega: float, coef: torch.Tensor | None) -> torch.Tensor:
        z = full(z)
        if coef is None:
            return torch.sin(omega * z)
        a, b, c, d = coef  # INCODE: exp keeps amplitude and frequency positive
        return torch.exp(a) * torch.sin(torch.exp(b) * omega * z + c) + d

    def _tiles(self, x: torch.Tensor, tile_slot: torch.Tensor) -> torch.Tensor:
        """Values (r, t, c) of padded points x (r, t, d), tile i evaluated by partition tile_slot[i]."""
        coef = self._coefficients()
        w, b = self.local_weights, self.local_biases
        # The first layers stay in full precision under autocast and TF32: their outputs are phases.
        with torch.autocast(x.device.type, enabled=False):
            x = full(x)
            w0 = w[0][tile_slot]  # (r, d, h)
            z = b[0][tile_slot][:, None, :]
            for k in range(self.in_dim):
                z = z + x[..., k:k + 1] * w0[:, k:k + 1, :]
            u = self._sine(z, self.first_omega0, coef.get("local"))
            g = self._sine(exact_linear(x, self.global_layers[0].weight, self.global_layers[0].bias),
                           self.first_omega0, coef.get("global")) if self.use_global else None
        h = self._fuse(u, g, coef)
        for layer in range(1, self.num_layers):
            u = self._sine(torch.baddbmm(b[layer][tile_slot][:, None, :], h, w[layer][tile_slot]), self.omega0,
                           coef.get("local"))
            if g is not None:
                g = self._sine(self.global_layers[layer](g), self.omega0, coef.get("global"))
            h = self._fuse(u, g, coef)
        last = self.num_layers
        return torch.baddbmm(b[last][tile_slot][:, None, :], h, w[last][tile_slot])

    def _fuse(self, u: torch.Tensor, g: torch.Tensor | None, coef) -> torch.Tensor:
        if g is None:
            return u
        return self._sine(self.fusion(torch.cat([u, g.to(u.dtype)], dim=-1)), self.omega0, coef.get("fusion"))

    # -- the fused kernel's view (local mode: one sine MLP per partition; `kernels.single`) --------------
    def fused_params(self) -> dict[str, torch.Tensor]:
        """The local branch under the kernel's stacked names, one kernel field per partition slot:
        {"layers.i.weight" (p, out, in), "layers.i.bias" (p, out)}, detached."""
        named = {}
        for i, (w, b) in enumerate(zip(self.local_weights, self.local_biases)):
            named[f"layers.{i}.weight"], named[f"layers.{i}.bias"] = w.detach().transpose(1, 2), b.detach()
        return named

    @torch.no_grad()
    def load_fused(self, named: dict[str, torch.Tensor]) -> None:
        """The inverse of `fused_params`: copy the kernel's stacked layers into the local branch."""
        for i, (w, b) in enumerate(zip(self.local_weights, self.local_biases)):
            w.copy_(named[f"layers.{i}.weight"].transpose(1, 2))
            b.copy_(named[f"layers.{i}.bias"])

    def fused_routes(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training points (n, d), or (n, d + 1) naming their slot (`training_points`), as the kernel reads
        them: the coordinates (n, d) and each point's partition slot (n,)."""
        if coords.shape[-1] == self.in_dim + 1:
            return coords[:, :-1], coords[:, -1].round().long()
        slot, _ = self.route(coords)
        return coords, slot

    # -- training points ----------------------------------------------------------------------------
    def training_points(self, coords: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...],
                        slots: list[int] | None = None, origin: tuple[int, ...] | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The points each partition trains on: its box widened by `overlap` samples per side (clipped
        to the grid), each tagged with its slot, so a margin sample trains both neighbours. `coords`
        and `values` are a (*shape) grid, flattened, whose sample 0 lies at `origin` in the field's
        frame (default 0). Without overlap and without a `slots` subset they come back unchanged."""
        # The fades read a neighbour up to `blend` samples past its box; it trains twice as far, so it is not
        # read at the edge of what it fitted (a margin of just `blend` left 2.3 dB seams, BENCHMARKS.md "Seams").
        overlap = tuple(max(m, 2 * b) for m, b in zip(_broadcast(self.overlap or (0,), self.in_dim),
                                                      self.blend_samples))
        if not any(overlap) and slots is None:
            return coords, values
        boxes = self.part_boxes()
        slots = range(self.num_parts) if slots is None else slots
        grid = torch.arange(math.prod(shape)).reshape(shape)
        chosen_coords, chosen_values = [], []
        origin = origin or (0,) * self.in_dim
        for s in slots:
            index = tuple(slice(max(0, lo - m - o), max(0, min(n, hi + m - o)))
                          for (lo, hi), m, n, o in zip(boxes[s], overlap, shape, origin))
            flat = grid[index].reshape(-1)
            tag = torch.full((flat.numel(), 1), float(s), dtype=coords.dtype)
            chosen_coords.append(torch.cat([coords[flat], tag], dim=1))
            chosen_values.append(values[flat])
        return torch.cat(chosen_coords), torch.cat(chosen_values)

    def part_boxes(self) -> list[Box]:
        """Each slot's box in samples of the field's frame."""
        boxes: list[Box] = [()] * self.num_parts
        for cell, box in enumerate(cell_boxes(self.edges)):
            if self.cells[cell] >= 0:
                boxes[self.cells[cell]] = box
        return boxes


def _closest(f, target: int, name: str, lo: int = 1) -> int:
    """The integer k ≥ lo whose increasing f(k) is closest to `target` (the smaller on a tie)."""
    hi = lo
    while f(hi) < target:
        lo, hi = hi, hi * 2
        if hi > 2**24:
            raise UserError(f"--params {target} is too large for field {name!r}")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda k: (abs(f(k) - target), k))


def _fade_widths(blend: tuple[int, ...], span: tuple[int, ...], edges: tuple[tuple[int, ...], ...]) -> list[float]:
    """Each axis's fade width in canonical units: `blend` samples, at most half the narrowest partition (a
    point then lies within the width of one edge at most, so the fades meet continuously)."""
    widths = []
    for b, n, axis in zip(blend, span, edges):
        narrowest = min(hi - lo for lo, hi in zip(axis[:-1], axis[1:]))
        widths.append(2.0 * min(b, narrowest / 2) / n)
    return widths


def default_overlap(edges: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """The training margin per axis that a new field gets unless --overlap is given (`OVERLAP_FRACTION`)."""
    return tuple(0 if len(axis) < 3 else min(b - a for a, b in zip(axis[:-1], axis[1:])) // OVERLAP_FRACTION
                 for axis in edges)


def _is_batched(x: torch.Tensor) -> bool:
    """Whether x is a tensor that `torch.func.vmap` batches (its points differ per field of a stack)."""
    return torch._C._functorch.is_batchedtensor(x)


def _broadcast(values: tuple[int, ...], in_dim: int) -> tuple[int, ...]:
    return tuple(values) * in_dim if len(values) == 1 else tuple(values)


@register_field("local-global")
@dataclasses.dataclass(frozen=True)
class LocalGlobalConfig(FieldConfig):
    """Partitioned sine field: a SIREN per partition plus a shared global SIREN; croppable, extendable."""

    mode: Literal["local-global", "local"] = "local-global"
    """local-global: per-partition MLPs fused with a shared global MLP (the paper's); local: no global branch."""
    partitions: tuple[int, ...] = ()
    """Partitions per axis (one number for every axis, or one per axis); default 32 (1D), 16 (2D), 8 (3D),
    fewer where partitions would hold under 1024 (1D), 32 (2D) or 8 (3D) samples per axis."""
    partition_size: tuple[int, ...] = ()
    """Samples per partition along each axis (instead of --partitions); the last may be shorter."""
    hidden_dim: int = 0
    """Width of each partition's local MLP; 0: solved, with --global-dim, for the default parameter budget
    (206,610 in 2D, what 14 and 84 give 16×16 partitions), so the partition count does not change the size."""
    global_dim: int = 0
    """Width of the global MLP (local-global mode); 0: solved for the default budget as --hidden-dim is."""
    num_layers: int = 4
    """Sine layers in each branch (the fusion follows each); a linear head per partition follows."""
    omega0: float = 30.0
    """Frequency factor ω₀ of the hidden sine layers."""
    first_omega0: float = 30.0
    """Frequency factor of the first layers."""
    overlap: tuple[int, ...] = ()
    """Training margin: each partition also fits this many of its neighbours' samples per side (per axis), so
    neighbours agree at their border; renders still read each point's own partition only. Empty: 1/16 of
    the narrowest partition (2 samples of a 32-sample one), 0 on an axis of one partition; 0: none."""
    blend: tuple[int, ...] = ()
    """Cross-fade width in samples (per axis): within it of a partition border a value is the smooth blend of
    both partitions' (a partition of unity), so tiles meet without seams; each partition trains on a margin of
    at least twice this width; cropping a partition away changes the values within this width of the cut (its
    share drops out). Empty or 0: each point reads its own partition only (a field.json without it)."""
    global_share: float = 0.1
    """With --params: the share of the budget given to the shared weights (global MLP and fusion)."""
    incode: bool = False
    """INCODE-style sines a·sin(b·ωz + c) + d, with (a, b, c, d) per layer group from a small harmonizer."""
    span: tuple[int, ...] = ()
    """Resolved from the signal: samples per axis of the grid the field was fitted to (canonical [-1, 1])."""
    edges: tuple[tuple[int, ...], ...] = ()
    """Resolved: partition edges per axis in samples of that grid (past its end once extended)."""
    cells: tuple[int, ...] = ()
    """Resolved: each grid cell's partition (row-major), -1 where cropped away; empty means all, in order."""

    # 2e-3, not SIREN's 1e-3: each partition's net sees few samples and small gradients; at 300 steps on 128 px
    # photos 1e-3 left Local-Global 2 dB below a SIREN of its count, 2e-3 and 3e-3 put it above, 5e-3 diverged
    # (BENCHMARKS.md "Local-Global at the README's size", chosen on astronaut and natural512/03, not camera).
    lr = 2e-3
    size_knob = "hidden_dim"
    may_be_zero = ("hidden_dim", "global_dim")
    resolved = ("span", "edges", "cells")
    maxima = {**FieldConfig.maxima, "partitions": LIMITS.width}

    # -- options ------------------------------------------------------------------------------------
    def validate(self) -> None:
        super().validate()
        if self.partitions and self.partition_size:
            raise UserError("give --partitions or --partition-size, not both")
        for flag, values, low in (("--partitions", self.partitions, 1), ("--partition-size", self.partition_size, 1),
                                  ("--overlap", self.overlap, 0), ("--blend", self.blend, 0)):
            if len(values) not in (0, 1, self.in_dim):
                raise UserError(f"{flag} needs one number or {self.in_dim} (one per axis), got {len(values)}")
            if any(v < low for v in values):
                raise UserError(f"{flag} must be {'positive' if low else 'non-negative'}, got {values}")
        if not 0 < self.global_share < 1:
            raise UserError(f"--global-share must be between 0 and 1, got {self.global_share}")
        if self.edges:
            if len(self.edges) != self.in_dim or len(self.span) != self.in_dim:
                raise UserError("the resolved partition edges do not match the coordinate dimensions")
            if any(len(e) < 2 or any(a >= b for a, b in zip(e[:-1], e[1:])) for e in self.edges):
                raise UserError("the resolved partition edges must increase along every axis")
            cells = self.cells or tuple(range(math.prod(len(e) - 1 for e in self.edges)))
            slots = sorted(c for c in cells if c >= 0)
            if len(cells) != math.prod(len(e) - 1 for e in self.edges) or slots != list(range(len(slots))) \
                    or not slots:
                raise UserError("the resolved partition cells do not match the edges")

    def _counts(self, shape: tuple[int, ...] | None) -> tuple[int, ...]:
        if self.partitions:
            counts = _broadcast(self.partitions, self.in_dim)
            for a, (k, n) in enumerate(zip(counts, shape or counts)):
                if k > n:
                    raise UserError(f"--partitions {k} on axis {a} exceeds its {n} samples")
            return counts
        if self.partition_size and shape is not None:
            return tuple(math.ceil(n / s) for n, s in zip(shape, _broadcast(self.partition_size, self.in_dim)))
        default, least = DEFAULT_COUNTS.get(self.in_dim, 4), DEFAULT_MIN_SIZE.get(self.in_dim, 8)
        return tuple(max(1, min(default, n // least)) for n in shape) if shape else (default,) * self.in_dim

    def adapt(self, shape: tuple[int, ...]) -> LocalGlobalConfig:
        """Cut the sample grid `shape` into partitions on whole-sample edges."""
        shape = tuple(int(n) for n in shape)
        if len(shape) != self.in_dim:
            raise UserError(f"a {self.in_dim}-dimensional field cannot cover a grid of shape {shape}")
        if self.span == shape and self.edges:
            return self
        edges = tuple(balanced_edges(0, n, k) for n, k in zip(shape, self._counts(shape)))
        adapted = self.replace(span=shape, edges=edges, cells=(), overlap=self.overlap or default_overlap(edges))
        # Widths solved for the default budget here; a fit or a dataset may size the field again (at most the
        # signal's values), and says the size it ends with, so this step says nothing (it read as the final size).
        return adapted.sized()

    def _resolved(self) -> LocalGlobalConfig:
        """Before `adapt`, a uniform grid of the asked-for (or default) partition counts over [-1, 1]."""
        if self.edges:
            return self
        counts = self._counts(None)
        return self.replace(span=counts, edges=tuple(balanced_edges(0, k, k) for k in counts), cells=())

    @property
    def num_parts(self) -> int:
        config = self._resolved()
        cells = config.cells or (0,) * math.prod(len(e) - 1 for e in config.edges)
        return math.prod(len(e) - 1 for e in config.edges) if not config.cells else max(cells) + 1

    # -- size -----------------------------------------------------------------------------------------
    def _param_counts(self, hidden: int, width: int, parts: int) -> tuple[int, int]:
        """(local, shared) parameter counts for local width `hidden` and global width `width`."""
        d, c, layers = self.in_dim, self.out_dim, self.num_layers
        local = parts * ((d + 1) * hidden + (layers - 1) * (hidden * hidden + hidden) + (hidden + 1) * c)
        shared = 0
        if self.mode == "local-global":
            shared = (d + 1) * width + (layers - 1) * (width * width + width) + (hidden + width + 1) * hidden
        if self.incode:
            shared += HARMONIZER_LATENT + (HARMONIZER_LATENT + 1) * HARMONIZER_HIDDEN + \
                (HARMONIZER_HIDDEN + 1) * 4 * len(GROUPS)
        return local, shared

    def default_budget(self) -> int:
        """The parameters of `REFERENCE_WIDTHS` at this dimension's default partition counts."""
        parts = DEFAULT_COUNTS.get(self.in_dim, 4) ** self.in_dim
        reference = dataclasses.replace(self, mode="local-global")  # one budget for both modes (the paper's LC)
        return sum(reference._param_counts(*REFERENCE_WIDTHS, parts))

    def widths(self) -> tuple[int, int]:
        """(local, global) widths: those given, and any left at 0 solved for the default budget."""
        if self.hidden_dim and (self.global_dim or self.mode == "local"):
            return self.hidden_dim, self.global_dim
        parts = self.num_parts
        if parts == DEFAULT_COUNTS.get(self.in_dim, 4) ** self.in_dim and self.mode == "local-global" \
                and not (self.hidden_dim or self.global_dim):
            return REFERENCE_WIDTHS  # the budget's own widths (the solver's share rule would pick others in 1D)
        return self._solve_widths(self.default_budget(), parts, self.hidden_dim, self.global_dim)

    def sized(self) -> LocalGlobalConfig:
        """The config with its widths set (`widths`), as a stored field holds it."""
        hidden, width = self.widths()
        return self if (hidden, width) == (self.hidden_dim, self.global_dim) else \
            self.replace(hidden_dim=hidden, global_dim=width)

    def num_params(self) -> int:
        return sum(self._param_counts(*self.widths(), self.num_parts))

    def with_params(self, target: int) -> LocalGlobalConfig:
        """Both widths solved for `target` parameters (`_solve_widths`), whatever they were."""
        if target <= 0:
            raise UserError(f"--params must be positive, got {target}")
        hidden, width = self._solve_widths(target, self.num_parts)
        return self.replace(hidden_dim=hidden, global_dim=width)

    def _solve_widths(self, target: int, parts: int, hidden: int = 0, width: int = 0) -> tuple[int, int]:
        """The widths for `target` parameters exactly, by integer search (the counts are monotone), keeping
        a width that is given (non-zero): for each local width h the global width g closest to the
        budget's remainder is found by bisection, h is the one whose shared share is closest to
        `global_share`, and finally h is re-chosen for that g so no neighbouring width is closer to
        `target`. Pure arithmetic (no config is built), so `num_params` may call it."""

        def total(h: int, g: int) -> int:
            return sum(self._param_counts(h, g, parts))

        def closest(f) -> int:
            return _closest(f, target, self.name)

        if self.mode == "local":
            return hidden or closest(lambda h: total(h, 1)), width
        if hidden:
            return hidden, width or closest(lambda g: total(hidden, g))
        if width:
            return closest(lambda h: total(h, width)), width
        best = None
        h = 1
        while total(h, 1) <= target or h == 1:
            g = closest(lambda g: total(h, g))
            shared = self._param_counts(h, g, parts)[1]
            score = abs(shared / max(total(h, g), 1) - self.global_share)
            if best is None or score < best[0]:
                best = (score, h, g)
            h += 1
        _, h, g = best
        return closest(lambda k: total(k, g)), g

    def fused_spec(self) -> FusedSpec | None:
        """Local mode (without INCODE's harmonizer) is a sine MLP per partition, which the fused kernel steps
        as a stack of fields in one field's fit (`FusedSpec.partitioned`); the global branch's fusion is none."""
        if self.mode != "local" or self.incode:
            return None
        return FusedSpec(self.in_dim, self.widths()[0], self.out_dim, self.num_layers, "sine", float(self.first_omega0),
                         float(self.omega0), partitioned=True)

    # -- building -------------------------------------------------------------------------------------
    def item_defaults(self, shape: tuple[int, ...]) -> dict[str, Any]:
        # ω₀ 5 per 8 samples: on 8×8 validation photos ω₀ 30 is noise between the centres (17.5 dB against
        # the 32×32 photo, bicubic 26.1), ω₀ 5 gives 23.6 dB at a 65.1 dB fit (benchmarks/bandwidth_sweep.py).
        omega = per_item_side(5.0, shape, type(self).omega0)
        return {"omega0": omega, "first_omega0": omega}

    def build(self) -> LocalGlobal:
        config = self._resolved()
        cells = config.cells or tuple(range(math.prod(len(e) - 1 for e in config.edges)))
        hidden, width = self.widths()
        return LocalGlobal(in_dim=self.in_dim, out_dim=self.out_dim, hidden_dim=hidden,
                           global_dim=width, num_layers=self.num_layers, omega0=self.omega0,
                           first_omega0=self.first_omega0, span=config.span, edges=config.edges, cells=cells,
                           use_global=self.mode == "local-global", incode=self.incode, overlap=self.overlap,
                           blend=self.blend)

    # -- the crop protocol (edit/crop.py) ---------------------------------------------------------------
    def _cells(self) -> tuple[int, ...]:
        config = self._resolved()
        return config.cells or tuple(range(math.prod(len(e) - 1 for e in config.edges)))

    def part_boxes(self) -> list[Box]:
        """Each partition's box in samples of the field's frame, in slot order."""
        config = self._resolved()
        boxes: list[Box] = [()] * self.num_parts
        for cell, box in zip(self._cells(), cell_boxes(config.edges)):
            if cell >= 0:
                boxes[cell] = box
        return boxes

    def without_parts(self, state: dict[str, torch.Tensor], parts: list[int]) -> tuple[LocalGlobalConfig, dict]:
        """Delete partitions `parts` (slot indices): their local weights and biases go; the grid stays."""
        count = self.num_parts
        bad = [p for p in parts if not 0 <= p < count]
        if bad:
            raise UserError(f"--remove: partition {bad[0]} does not exist (this field has 0..{count - 1})")
        drop = set(parts)
        keep = [s for s in range(count) if s not in drop]
        if not keep:
            raise UserError("--remove would delete every partition")
        renumber = {old: new for new, old in enumerate(keep)}
        cells = tuple(renumber.get(c, -1) if c >= 0 else -1 for c in self._cells())
        index = torch.tensor(keep, dtype=torch.long)
        new_state = {k: v.index_select(0, index.to(v.device)).clone() if k.startswith("local_") else v.clone()
                     for k, v in state.items()}
        config = self._resolved()
        return self.replace(span=config.span, edges=config.edges, cells=cells), new_state

    def cropped(self, state: dict[str, torch.Tensor], box: Box) -> tuple[LocalGlobalConfig, dict]:
        """Keep the partitions that any point of `box` (frame samples) is routed to; delete the rest."""
        config = self._resolved()
        counts = [len(e) - 1 for e in config.edges]
        drop = []
        for cell, part_box in zip(self._cells(), cell_boxes(config.edges)):
            if cell < 0:
                continue
            index = [config.edges[a].index(lo) for a, (lo, _) in enumerate(part_box)]
            # Border cells also own everything beyond the grid (routing clamps), so they reach ±∞.
            reach = [(-math.inf if i == 0 else lo, math.inf if i == k - 1 else hi)
                     for i, k, (lo, hi) in zip(index, counts, part_box)]
            if not all(lo < b_hi and b_lo < hi for (lo, hi), (b_lo, b_hi) in zip(reach, box)):
                drop.append(cell)
        if not drop:
            return self._resolved(), {k: v.clone() for k, v in state.items()}
        return self.without_parts(state, drop)

    # -- the extend protocol (edit/extend.py) -----------------------------------------------------------
    def extended(self, state: dict[str, torch.Tensor], shape: tuple[int, ...]) -> tuple[LocalGlobalConfig, dict,
                                                                                           list[int]]:
        """Grow the grid to cover `shape` (frame samples from the frame's origin) with new partitions about
        as large as the first ones, and give cells cropped away new partitions too; returns the config,
        weights (new slots freshly initialised) and the new slots. Old slots keep their indices and weights."""
        config = self._resolved()
        edges = tuple(grow_edges(e, n) for e, n in zip(config.edges, shape))
        old_counts = [len(e) - 1 for e in config.edges]
        counts = [len(e) - 1 for e in edges]
        old_cells = self._cells()
        cells, new_slots = [], []
        next_slot = self.num_parts
        for index in _indices(counts):
            inside = all(i < k for i, k in zip(index, old_counts))
            old = old_cells[cell_index(index, tuple(old_counts))] if inside else -1
            if old >= 0:
                cells.append(old)
            else:  # a cell beyond the old grid, or one cropped away: a new partition fits it
                cells.append(next_slot)
                new_slots.append(next_slot)
                next_slot += 1
        grown = self.replace(span=config.span, edges=edges, cells=tuple(cells))
        fresh = grown.build()  # initialises every slot; the old ones are overwritten below
        new_state = {}
        for key, value in fresh.state_dict().items():
            old = state[key]
            if key.startswith("local_"):
                value = value.clone()
                value[:old.shape[0]] = old
            else:
                value = old.clone()
            new_state[key] = value
        return grown, new_state, new_slots


def _indices(counts: list[int]):
    """Every cell's index tuple, row-major."""
    if not counts:
        yield ()
        return
    for first in range(counts[0]):
        for rest in _indices(counts[1:]):
            yield (first,) + rest
