"""Inside/outside labels of a triangle mesh at the centres of a grid, by signed ray crossings: the labels of
the generalized winding number (`signals.mesh.winding_number` > 0.5), in time linear in cells + faces.

Every column (x, y) of the grid is a ray along +z. A triangle whose xy-projection holds the column's centre
crosses that ray once, at some z, with the sign of its normal's z: +1 where the surface leaves the solid
going up (an outward face looking up), -1 where it enters. Summed over the crossings above a cell centre,
these signs are the centre's winding number, which for a closed mesh is the generalized winding number,
exactly: inside ⇔ it is > 0. So each crossing adds its sign at its z-cell (scatter-add) and a reversed
cumulative sum along z labels every cell: the cost is linear in cells + (triangle, column) pairs, against
cells × faces for winding numbers.

A ray through a shared edge or vertex must count the surface once. Each edge's test (which side of it a
column centre lies on) is computed with its endpoints in one canonical order, so the two triangles that
share the edge get bit-identical values of opposite sign, and a centre exactly on an edge is moved off it by
one fixed infinitesimal step (the same for all edges, so a centre on a vertex is handled too). Where the
surface folds over (the two triangles of an edge on one side of it), both or neither count, with opposite
signs. The crossings along a whole column of a closed surface sum to 0; a column where they do not (a
rounding accident on a near-degenerate triangle) is labelled again by winding numbers, cell by cell.

An open mesh (a scan with holes: edges without their reverse, `boundary_edges`) is closed first by a fan
over each hole, and the fans' own winding number is taken off where it could move a label: near the holes
(`_remove_patches`). Winding numbers are additive over faces, so this is the open mesh's winding number, and
its labels equal those of the held-out points a fit is scored on. (Rays alone would flip every cell of a
column through a hole; a vote of rays along several axes errs where two of them pass holes, and agrees with
no winding number.) A mesh that is mostly boundary (a triangle soup) is left to winding numbers (`label_grid`).

Shape letters: v vertices, f faces, p (triangle, column) pairs, r the grid's resolution, b boundary edges, h holes.
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
OPEN_SHARE = 0.125
"""Share of open edges above which `label_grid` leaves a mesh to winding numbers."""


def boundary_edges(faces: torch.Tensor) -> torch.Tensor:
    """The open boundary (b, 2) of a mesh (faces (f, 3)): each edge used more often from u to v than from v to
    u, as (u, v), once per use in excess; empty for a closed mesh.

    Empty means a boundary-free, consistently oriented surface; non-manifold edges (two solids touching
    along an edge) pass. Vertices must be merged (`read_mesh` does): a triangle soup is all boundary."""
    u = faces.reshape(-1)
    v = faces.roll(-1, dims=1).reshape(-1)
    low, high = torch.minimum(u, v), torch.maximum(u, v)
    sign = (u < v).to(torch.int64) - (u > v).to(torch.int64)  # a face with a repeated vertex: 0 there
    keys, which = torch.unique(low * (int(faces.max()) + 1) + high, return_inverse=True)
    balance = torch.zeros(len(keys), dtype=torch.int64, device=faces.device).index_add_(0, which, sign)
    ends = torch.zeros(len(keys), 2, dtype=torch.int64, device=faces.device)
    ends[which] = torch.stack([low, high], dim=1)
    ends = torch.where((balance > 0)[:, None], ends, ends.flip(1))
    return ends.repeat_interleave(balance.abs(), dim=0)


def label_grid(mesh, resolution: int, *, device: str | torch.device = "cpu",
               progress: bool = False) -> torch.Tensor | None:
    """`grid_inside` of a `signals.mesh.Mesh` over the canonical cube [-1, 1]³, on `device`; None when more
    than `OPEN_SHARE` of its edges are open (a triangle soup, a sheet), for the caller to label by winding
    numbers: correcting rays for so many open edges costs more than the winding numbers."""
    from fieldlab.signals.mesh import mesh_tensors

    vertices, faces = mesh_tensors(mesh, device, torch.float64)
    if len(boundary_edges(faces)) > OPEN_SHARE * 3 * len(faces):
        return None
    return grid_inside(vertices, faces, resolution, progress=progress)


@torch.no_grad()
def grid_inside(vertices: torch.Tensor, faces: torch.Tensor, resolution: int, lo: float = -1.0, hi: float = 1.0,
                *, progress: bool = False, desc: str | None = None) -> torch.Tensor:
    """Bool (r, r, r): whether the generalized winding number of the mesh (vertices (v, 3), faces (f, 3)) is
    > 0.5 at the centre of each cell of an r³ grid over [lo, hi]³; cell [i, j, k] is centred at
    lo + (i, j, k) + 0.5 cells, as `grid_coords`. An open mesh is closed by patches first (`_patches`).

    Runs on the vertices' device, in float64 whatever their dtype. The labels are the whole result, so a
    time limit cannot cut them short; they take seconds at 512³ (see benchmarks/mesh_labels.py).
    """
    device = vertices.device
    r = int(resolution)
    step = (hi - lo) / r
    mesh = vertices.to(torch.float64), faces.to(device)
    patches, balls = _patches(*mesh)
    corners = torch.cat([mesh[0][mesh[1]], patches])  # (f + b, 3 corners, 3): a closed surface
    winding, totals = _ray_counts(corners, r, lo, step, desc or f"labelling the {r}³ grid inside/outside the mesh",
                                  progress)
    inside = _sum_down_columns(winding, progress)
    if len(patches):
        _remove_patches(inside, winding, patches, balls, r, lo, step, progress)
    bad = torch.nonzero(totals != 0).squeeze(1)
    if len(bad):
        log.info("%d grid column(s) crossed the mesh inconsistently; labelled by winding numbers", len(bad))
        inside.view(r * r, r)[bad] = _winding_columns(*mesh, bad, r, lo, step)
    return inside


def _ray_counts(corners: torch.Tensor, r: int, lo: float, step: float, desc: str, progress: bool):
    """The crossings of a closed mesh's triangles (f, 3, 3) with the grid's columns, summed at their z-cells
    (r, r, r) int16 (a crossing counts for the cell centres below it), and in all per column (r²,) int32."""
    winding = torch.zeros(r, r, r, dtype=torch.int16, device=corners.device)
    totals = torch.zeros(r * r, dtype=torch.int32, device=corners.device)
    first, count, span = _column_boxes(corners, r, lo, step)
    with phase(desc, len(corners), unit="face", bar=progress) as advance:
        for start, stop in _pieces(count, PAIRS.get(corners.device.type, PAIRS["cuda"])):
            column, z, sign = _crossings(corners[start:stop], first[start:stop], count[start:stop],
                                         span[start:stop], r, lo, step)
            totals.index_add_(0, column, sign.to(torch.int32))
            cells = torch.ceil((z - lo) / step - 0.5).long()  # cell centres strictly below the crossing
            kept = cells > 0  # a crossing below every centre is above none
            cells = cells.clamp(max=r)
            winding.view(-1).index_add_(0, column[kept] * r + cells[kept] - 1, sign[kept].to(torch.int16))
            advance(stop - start)
    return winding, totals


def _patches(vertices: torch.Tensor, faces: torch.Tensor):
    """What closes an open mesh: a fan over each hole from the centre of its rim, as triangles (b, 3, 3), and
    each hole's bounding ball (h, 4): centre and radius. Both empty for a closed mesh."""
    edges = boundary_edges(faces)
    if len(edges) == 0:
        return vertices.new_zeros(0, 3, 3), vertices.new_zeros(0, 4)
    hole = _components(edges, len(vertices))  # (b,): the hole of each boundary edge, 0 … h-1
    count = int(hole.max()) + 1
    starts = vertices[edges[:, 0]]  # every rim vertex starts one of its rim's edges
    centre = torch.zeros(count, 3, dtype=vertices.dtype, device=vertices.device).index_add_(0, hole, starts)
    centre /= torch.bincount(hole, minlength=count)[:, None]
    radius = torch.zeros(count, dtype=vertices.dtype, device=vertices.device).scatter_reduce_(
        0, hole, (starts - centre[hole]).norm(dim=1), "amax")
    # (b, a, centre) for the rim edge a → b: its edges cancel the rim's, and the spokes cancel each other
    fans = torch.stack([vertices[edges[:, 1]], starts, centre[hole]], dim=1)
    return fans, torch.cat([centre, radius[:, None]], dim=1)


def _components(edges: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """The connected component (0 … h-1) of each edge (b, 2) among the edges (label propagation)."""
    label = torch.arange(num_vertices, device=edges.device)
    while True:
        low = torch.minimum(label[edges[:, 0]], label[edges[:, 1]])
        new = label.clone().scatter_reduce_(0, edges.reshape(-1), low.repeat_interleave(2), "amin")
        new = new[new]  # pointer jumping: long rims settle in a few dozen rounds
        if torch.equal(new, label):
            break
        label = new
    return torch.unique(label[edges[:, 0]], return_inverse=True)[1]


def _remove_patches(inside, winding, patches, balls, r: int, lo: float, step: float, progress: bool) -> None:
    """Labels (in place) of the open mesh where its patches' own winding number may move them.

    The mesh's winding number is the closed surface's (counted by the rays) less the patches'. A hole's
    patch lies in its ball, so from a point at distance D from its centre it covers at most the ball's share
    of directions, (1 - sqrt(1 - ρ²/D²)) / 2 (a fan over a ring-like rim is crossed once at most). Where the
    shares of all holes sum under 1/2 the patches cannot move a label; elsewhere (near the holes: cells within
    balls enlarged until each share is under 1/(2h) are checked) their winding number is computed."""
    from fieldlab.signals.mesh import label_points

    h = len(balls)
    reach = balls[:, 3] / (1 - (1 - 1 / h) ** 2) ** 0.5 + step  # share 1/(2h) at D = reach
    cells = torch.unique(torch.cat([_cells_in_ball(centre, radius, r, lo, step)
                                    for centre, radius in zip(balls[:, :3], reach)]))
    if len(cells) == 0:  # the holes lie off the grid
        return
    index = torch.stack([cells // (r * r), cells // r % r, cells % r], dim=1)
    centres = (index.to(torch.float64) + 0.5) * step + lo
    near = torch.cat([_shares(centres[start:start + 2**22 // h], balls) >= 0.5
                      for start in range(0, len(centres), 2**22 // h)])
    cells, centres = cells[near], centres[near]
    columns, which = torch.unique(cells // r, return_inverse=True)
    above = winding.view(r * r, r)[columns].flip(1).cumsum(1, dtype=torch.int16).flip(1)  # (columns, r)
    count = above[which, cells % r]
    corners = patches.reshape(-1, 3)
    own = label_points(centres, corners, torch.arange(len(corners), device=corners.device).reshape(-1, 3),
                       progress=progress, desc="labelling the cells near the mesh's holes")
    inside.view(-1)[cells] = (count - own) > 0.5


def _shares(points: torch.Tensor, balls: torch.Tensor) -> torch.Tensor:
    """The most (n,) that the patches inside the balls (h, 4) can add to the winding number at points (n, 3)."""
    distance = (points[:, None] - balls[None, :, :3]).norm(dim=-1)  # (n, h)
    ratio = (balls[None, :, 3] / distance).clamp(max=1)
    return ((1 - (1 - ratio**2).sqrt()) / 2).sum(1)


def _cells_in_ball(centre: torch.Tensor, radius: float, r: int, lo: float, step: float) -> torch.Tensor:
    """Flat indices of the cells whose centres lie within `radius` of `centre` (3,)."""
    first = torch.ceil((centre - radius - lo) / step - 0.5).long().clamp(0, r - 1)
    last = torch.floor((centre + radius - lo) / step - 0.5).long().clamp(0, r - 1)
    axes = [torch.arange(int(first[d]), int(last[d]) + 1, device=centre.device) for d in range(3)]
    index = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    near = (((index.to(centre.dtype) + 0.5) * step + lo - centre).norm(dim=1) <= radius)
    return (index[near] * torch.tensor([r * r, r, 1], device=centre.device)).sum(1)


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
    point + (-ε², ε), which is left of every edge in that order (they point right, or straight up)."""
    swap = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
    u = torch.where(swap[:, None], b, a)
    d = torch.where(swap[:, None], a, b) - u
    f = d[:, 0] * (point[:, 1] - u[:, 1]) - d[:, 1] * (point[:, 0] - u[:, 0])
    tie = (d != 0).any(dim=1).to(f.dtype)
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
    """Inside (c, r) at every cell of some columns (c,) by winding numbers (columns whose ray counts cannot be
    trusted)."""
    from fieldlab.signals.mesh import label_points

    shape = (len(columns), r)
    index = torch.stack([(columns // r)[:, None].expand(shape), (columns % r)[:, None].expand(shape),
                         torch.arange(r, device=columns.device)[None].expand(shape)], dim=-1).reshape(-1, 3)
    centres = (index.to(torch.float64) + 0.5) * step + lo
    numbers = label_points(centres.to(vertices.dtype), vertices, faces.to(vertices.device))
    return (numbers > 0.5).reshape(len(columns), r)
