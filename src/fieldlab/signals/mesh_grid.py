"""Inside/outside labels of a closed triangle mesh at the centres of a grid, by signed ray crossings.

Every column (x, y) of the grid is a ray along +z. A triangle whose xy-projection holds the column's centre
crosses that ray once, at some z, with the sign of its normal's z: +1 where the surface leaves the solid
going up (an outward face looking up), -1 where it enters. Summed over the crossings above a cell centre,
these signs are the centre's winding number, which for a closed mesh is the generalized winding number
(`signals.mesh.winding_number`), exactly: inside ⇔ it is > 0, the rule the point labels use. So each
crossing adds its sign at its z-cell (scatter-add) and a reversed cumulative sum along z labels every cell:
the cost is linear in cells + (triangle, column) pairs, against cells × faces for winding numbers.

A ray through a shared edge or vertex must count the surface once. Each edge's test (which side of it a
column centre lies on) is computed with its endpoints in one canonical order, so the two triangles that
share the edge get bit-identical values of opposite sign, and a centre exactly on an edge is moved off it by
a fixed infinitesimal step (the same for all edges, so vertices are handled too). Where the surface folds
over (the two triangles of an edge on one side of it), both or neither count, with opposite signs.

The crossings along a whole column of a closed mesh sum to 0; a column where they do not (a rounding
accident on a near-degenerate triangle) is labelled again by winding numbers, cell by cell.

Only closed meshes (`open_edges` = 0: every directed edge matched by its reverse) are labelled this way: a ray
through a hole of an open mesh would flip every cell below it. Open meshes keep winding numbers.

Shape letters: v vertices, f faces, p (triangle, column) pairs, r the grid's resolution.
"""

from __future__ import annotations

import logging

import torch

from fieldlab._progress import phase

log = logging.getLogger("fieldlab")

PAIRS = {"cpu": 2**20, "cuda": 2**23}
"""(triangle, column) pairs handled at once (about 100 bytes each)."""
SLAB_CELLS = 2**24
"""Cells per slab of the reversed cumulative sum (an int16 slab and its copies)."""


def open_edges(faces: torch.Tensor) -> int:
    """Edges (of faces (f, 3)) not used as often from u to v as from v to u: 0 for a closed mesh.

    Zero means a boundary-free, consistently oriented surface; non-manifold edges (two solids touching
    along an edge) pass. Vertices must be merged (`read_mesh` does): a triangle soup is open by this count."""
    u = faces.reshape(-1)
    v = faces.roll(-1, dims=1).reshape(-1)
    key = torch.minimum(u, v) * (int(faces.max()) + 1) + torch.maximum(u, v)
    sign = (u < v).to(torch.int64) - (u > v).to(torch.int64)  # a face with a repeated vertex: 0 there
    keys, which = torch.unique(key, return_inverse=True)
    balance = torch.zeros(len(keys), dtype=torch.int64, device=faces.device).index_add_(0, which, sign)
    return int(balance.count_nonzero())


def label_closed_grid(mesh, resolution: int, *, device: str | torch.device = "cpu",
                      progress: bool = False) -> torch.Tensor | None:
    """`grid_inside` of a `signals.mesh.Mesh` over the canonical cube [-1, 1]³, on `device`; None when the mesh
    is open, for the caller to label by winding numbers.

    Why not rays for open meshes too (several directions, a vote): where a ray leaves through a hole every
    cell it passed is flipped, and a vote of three directions still errs where two of them do; and the
    held-out points a fit is scored on are labelled by winding numbers, which treat holes gracefully, so the
    grid of an open mesh keeps them and agrees with its points."""
    from fieldlab.signals.mesh import mesh_tensors

    vertices, faces = mesh_tensors(mesh, device, torch.float64)
    holes = open_edges(faces)
    if holes:
        log.debug("the mesh has %d open edge(s): its %d³ grid is labelled by winding numbers (slower than rays)",
                 holes, resolution)
        return None
    return grid_inside(vertices, faces, resolution, progress=progress)


@torch.no_grad()
def grid_inside(vertices: torch.Tensor, faces: torch.Tensor, resolution: int, lo: float = -1.0, hi: float = 1.0,
                *, progress: bool = False, desc: str | None = None) -> torch.Tensor:
    """Bool (r, r, r): whether the centre of each cell of an r³ grid over [lo, hi]³ lies inside the closed mesh
    (vertices (v, 3), faces (f, 3)); cell [i, j, k] is centred at lo + (i, j, k) + 0.5 cells, as `grid_coords`.

    Runs on the vertices' device, in float64 whatever their dtype. The labels are the whole result, so a
    time limit cannot cut them short; they take seconds at 512³ (see benchmarks/mesh_labels.py).
    """
    device = vertices.device
    r = int(resolution)
    corners = vertices.to(torch.float64)[faces.to(device)]  # (f, 3 corners, 3)
    step = (hi - lo) / r
    winding = torch.zeros(r, r, r, dtype=torch.int16, device=device)
    totals = torch.zeros(r * r, dtype=torch.int32, device=device)  # every crossing of each column
    first, count, span = _column_boxes(corners, r, lo, step)
    desc = desc or f"labelling the {r}³ grid inside/outside the mesh"
    with phase(desc, len(corners), unit="face", bar=progress) as advance:
        for start, stop in _pieces(count, PAIRS.get(device.type, PAIRS["cuda"])):
            column, z, sign = _crossings(corners[start:stop], first[start:stop], count[start:stop],
                                         span[start:stop], r, lo, step)
            totals.index_add_(0, column, sign.to(torch.int32))
            cells = torch.ceil((z - lo) / step - 0.5).long()  # cell centres strictly below the crossing
            kept = cells > 0  # a crossing below every centre is above none
            cells = cells.clamp(max=r)
            winding.view(-1).index_add_(0, column[kept] * r + cells[kept] - 1, sign[kept].to(torch.int16))
            advance(stop - start)
    inside = _sum_down_columns(winding, progress)
    bad = torch.nonzero(totals != 0).squeeze(1)
    if len(bad):
        inside.view(r * r, r)[bad] = _winding_columns(vertices, faces, bad, r, lo, step)
    return inside


def _column_boxes(corners: torch.Tensor, r: int, lo: float, step: float):
    """Per triangle (f, 3, 3): the first column (f, 2) of its xy bounding box, the number of columns (f,) in the
    box, and the box's extent in y (f,). The box is widened by a hair: the edge tests decide, it must hold them."""
    low = corners[:, :, :2].amin(dim=1)
    high = corners[:, :, :2].amax(dim=1)
    first = torch.ceil((low - lo) / step - 0.5 - 1e-7).long().clamp(0, r)
    last = torch.floor((high - lo) / step - 0.5 + 1e-7).long().clamp(-1, r - 1)
    extent = (last - first + 1).clamp(min=0)
    return first, extent[:, 0] * extent[:, 1], extent[:, 1]


def _pieces(count: torch.Tensor, pairs: int):
    """(start, stop) of runs of triangles with about `pairs` (triangle, column) pairs each (one triangle at
    least, however many columns it covers)."""
    ends = torch.cumsum(count, 0)
    start, total = 0, len(count)
    while start < total:
        before = int(ends[start - 1]) if start else 0
        stop = int(torch.searchsorted(ends, before + pairs, right=True))
        stop = min(total, max(stop, start + 1))
        yield start, stop
        start = stop


def _crossings(corners, first, count, span, r: int, lo: float, step: float):
    """The crossings of a run of triangles (t, 3, 3) with the columns of their boxes: column index (p,), z (p,)
    and sign (p,) (+1: normal's z > 0), for the pairs where the column's centre is in the triangle."""
    triangle = torch.repeat_interleave(torch.arange(len(corners), device=corners.device), count)  # (p,)
    offset = torch.arange(len(triangle), device=corners.device) - (torch.cumsum(count, 0) - count)[triangle]
    i = first[triangle, 0] + torch.div(offset, span[triangle], rounding_mode="floor")
    j = first[triangle, 1] + offset % span[triangle]
    point = torch.stack([i, j], dim=1).to(torch.float64) * step + (lo + step / 2)  # (p, 2) column centres
    # side[:, e]: sign of edge e (from corner e to corner e+1) seen from the point; weight[:, e] the edge
    # function, which is twice the area of the sub-triangle opposite corner e+2.
    side, weight = [], []
    for e in range(3):
        s, w = _edge_side(corners[:, e, :2][triangle], corners[:, (e + 1) % 3, :2][triangle], point)
        side.append(s)
        weight.append(w)
    side = torch.stack(side, dim=1)  # (p, 3)
    up, down = (side > 0).all(dim=1), (side < 0).all(dim=1)
    hit = up | down
    weight = torch.stack(weight, dim=1)[hit]  # (h, 3): barycentric weights of corners 2, 0, 1
    z = corners[triangle[hit]][:, :, 2]  # (h, 3)
    total = weight.sum(dim=1)
    # Zero only where a centre on a degenerate triangle's edge counts by the tie rule: its corners' mean.
    cross = torch.where(total != 0, (weight * z[:, [2, 0, 1]]).sum(dim=1) / torch.where(total != 0, total, 1),
                        z.mean(dim=1))
    sign = up[hit].to(torch.int8) - down[hit].to(torch.int8)
    return (i * r + j)[hit], cross, sign


def _edge_side(a: torch.Tensor, b: torch.Tensor, point: torch.Tensor):
    """Which side (p,) in {-1, 0, 1} of the directed edge a → b (p, 2) each point (p, 2) lies on (+1: left),
    and the edge function (p,) itself; 0 only for an edge of zero length in xy.

    The function is computed from the endpoints in lexicographic order, then negated for the other direction,
    so that both triangles of an edge see exactly opposite values. A point on the edge's line is judged at
    point + (ε, ε²): by the sign of -dy, or of dx when the edge is horizontal."""
    swap = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
    u = torch.where(swap[:, None], b, a)
    d = torch.where(swap[:, None], a, b) - u
    f = d[:, 0] * (point[:, 1] - u[:, 1]) - d[:, 1] * (point[:, 0] - u[:, 0])
    tie = torch.where(d[:, 1] != 0, -torch.sign(d[:, 1]), torch.sign(d[:, 0]))
    side = torch.where(f != 0, torch.sign(f), tie)
    flip = 1 - 2 * swap.to(f.dtype)
    return side * flip, f * flip


def _sum_down_columns(winding: torch.Tensor, progress: bool) -> torch.Tensor:
    """Inside (r, r, r): the sum of the crossings at or above each cell (a reversed cumulative sum along z) > 0."""
    r = winding.shape[0]
    inside = torch.empty(winding.shape, dtype=torch.bool, device=winding.device)
    rows = max(1, SLAB_CELLS // (r * r))
    with phase("summing the crossings along the grid's columns", r, unit="slab", bar=progress) as advance:
        for start in range(0, r, rows):
            slab = winding[start:start + rows].flip(2).cumsum(2, dtype=torch.int16).flip(2)
            inside[start:start + rows] = slab > 0
            advance(len(slab))
    return inside


def _winding_columns(vertices, faces, columns: torch.Tensor, r: int, lo: float, step: float) -> torch.Tensor:
    """Inside (c, r) at every cell of some columns (c,) by winding numbers (columns whose crossings do not
    cancel, so their ray counts cannot be trusted)."""
    from fieldlab.signals.mesh import label_points

    log.info("%d grid column(s) crossed the mesh inconsistently; labelled by winding numbers", len(columns))
    shape = (len(columns), r)
    index = torch.stack([(columns // r)[:, None].expand(shape), (columns % r)[:, None].expand(shape),
                         torch.arange(r, device=columns.device)[None].expand(shape)], dim=-1).reshape(-1, 3)
    centres = (index.to(torch.float64) + 0.5) * step + lo
    numbers = label_points(centres.to(vertices.dtype), vertices, faces.to(vertices.device))
    return (numbers > 0.5).reshape(len(columns), r)
