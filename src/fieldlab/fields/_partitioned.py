"""Partition grids and the tiled layout that runs one small network per partition as one batched matmul.

A partition grid cuts a sample grid (`span` samples per axis) into boxes along per-axis `edges` (whole
samples; sizes need not divide the grid). Each grid cell holds a partition *slot* (the index along the
stacked parameters' first dimension) or -1 where its weights were cropped away.

`tile_layout` routes n points, each with a slot, into a padded (r, t) layout in which every tile of t
points belongs to one slot: then a layer is `bmm(x (r, t, i), weight[tile_slot] (r, i, o))`, one
batched matmul whatever the points are (a grid, a random batch, off-grid queries). Every shape depends
only on n and the slot count, never on the data, so it runs under `torch.func.vmap` and `torch.compile`.
Letters: n points, p partitions (slots), r tiles, t points per tile.
"""

from __future__ import annotations

import math

import torch

Box = tuple[tuple[int, int], ...]


def balanced_edges(start: int, stop: int, count: int) -> tuple[int, ...]:
    """`count` contiguous whole-sample pieces of [start, stop) whose sizes differ by at most one."""
    length = stop - start
    return tuple(start + j * length // count for j in range(count + 1))


def cell_boxes(edges: tuple[tuple[int, ...], ...]) -> list[Box]:
    """Every cell's box, row-major (the first axis varies slowest)."""
    boxes: list[Box] = [()]
    for axis in edges:
        boxes = [b + ((lo, hi),) for b in boxes for lo, hi in zip(axis[:-1], axis[1:])]
    return boxes


def cell_index(index: tuple[int, ...], counts: tuple[int, ...]) -> int:
    flat = 0
    for i, k in zip(index, counts):
        flat = flat * k + i
    return flat


def tile_size(num_points: int, num_parts: int) -> int:
    """Points per tile: a power of two up to 64, small enough that padding (≤ p·t rows) stays ≤ n/4."""
    if num_parts <= 1:
        return min(64, max(1, num_points))
    t = 1
    while t < 64 and 2 * t * num_parts * 4 <= num_points:
        t *= 2
    return t


def tile_layout(slot: torch.Tensor, num_parts: int, tile: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Route points to tiles of one slot each.

    slot: (n,) int64 in [0, p). Returns `src` (r·t,): the point in each padded position (n for padding);
    `pos` (n,): each point's padded position; `tile_slot` (r,): the slot of each tile. r = ⌈(n + p(t-1))/t⌉
    bounds the tiles any assignment needs.
    """
    n = slot.shape[0]
    rows = (n + num_parts * (tile - 1) + tile - 1) // tile
    order = torch.argsort(slot, stable=True)
    ordered = slot[order]
    # Counts by scatter-add and tile slots by a cumulative sum rather than searchsorted: under vmap (a
    # batch of fields, each with its own slots) searchsorted would copy an expanded query per field.
    count = torch.zeros(num_parts, dtype=slot.dtype, device=slot.device).scatter_add(0, slot, torch.ones_like(slot))
    start = torch.cumsum(count, 0) - count  # first sorted point of each slot
    tiles = (count + tile - 1) // tile
    tile_end = torch.cumsum(tiles, 0)
    first_tile = tile_end - tiles
    rank = torch.arange(n, device=slot.device) - start[ordered]
    pos_ordered = first_tile[ordered] * tile + rank
    pos = torch.empty_like(slot).scatter(0, order, pos_ordered)
    src = torch.full((rows * tile,), n, dtype=slot.dtype, device=slot.device).scatter(0, pos_ordered, order)
    ends = torch.zeros(rows + 1, dtype=slot.dtype, device=slot.device)
    ends = ends.scatter_add(0, tile_end.clamp(max=rows), torch.ones_like(tile_end))
    tile_slot = torch.cumsum(ends, 0)[:rows]  # tiles of slots that end at or before each tile
    return src, pos, tile_slot.clamp(max=num_parts - 1)


def canonical_edges(edges: tuple[int, ...], span: int) -> list[float]:
    """Inner edges of one axis in canonical coordinates (sample units u ↦ 2u/span - 1)."""
    return [2.0 * e / span - 1.0 for e in edges[1:-1]]


def grow_edges(edges: tuple[int, ...], stop: int) -> tuple[int, ...]:
    """`edges` continued past their end up to `stop` with pieces about as long as the first partition's."""
    if stop <= edges[-1]:
        return edges
    step = edges[1] - edges[0]
    count = math.ceil((stop - edges[-1]) / step)
    return edges + balanced_edges(edges[-1], stop, count)[1:]
