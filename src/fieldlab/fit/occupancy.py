"""Fitting a field to a mesh: one occupancy logit per point, binary cross-entropy, held-out scores.

    mesh ─► sample_occupancy (training points, FitConfig.seed) ─► OccupancyFitter.step … ─► field
      │                                                                                  │
      └─► sample_occupancy (held-out points, eval_seed) ─► iou ◄── logits ◄──────────────┤
      └─► surface samples ─► chamfer (the mesh's units) ◄── extract_mesh (marching cubes) ┘

Points are canonical coordinates in [-1, 1]^3 (`Mesh.to_canonical`); the reconstruction is returned in
the mesh's own units.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from fieldlab import _deadline
from fieldlab._errors import UserError
from fieldlab.fields import FieldConfig
from fieldlab.fit import loop
from fieldlab.fit.checkpoint import FitterCheckpoints, read_checkpoint
from fieldlab.fit.config import FitConfig
from fieldlab.fit.device_defaults import OCCUPANCY_POINTS, occupancy_points_per_step
from fieldlab.fit.loop import Fitter, RunLog, resolve_device
from fieldlab.signals.mesh import Backend, Mesh, sample_occupancy
from fieldlab.signals.mesh_export import extract_mesh, mesh_chamfer

log = logging.getLogger("fieldlab")


@dataclasses.dataclass(frozen=True)
class OccupancyConfig:
    """Which points a mesh is fitted and scored on, and how its surface is extracted."""

    points: int = 2**20
    """Training points (about 1-4 M on a GPU; a few 10 k on a CPU)."""
    surface_fraction: float = 0.8
    """Share of the points drawn near the surface; the rest are uniform in the cube."""
    surface_sigma: tuple[float, ...] = (0.01, 0.05)
    """Standard deviations (canonical units) of the noise that moves surface samples off the surface."""
    eval_points: int = 2**17
    """Held-out points for the IoU, drawn like the training points with `eval_seed`."""
    eval_seed: int = 1_000_003
    """Seed of the held-out points (fixed, so runs with different seeds are scored on the same points)."""
    resolution: int = 256
    """Samples per axis of the marching-cubes grid of the reconstruction."""
    chamfer_points: int = 100_000
    """Surface samples on each mesh for the Chamfer distance."""
    chunk: int = 2**20
    """Point-face pairs per block of the winding number (peak memory: about 80 bytes each in float32)."""
    backend: Backend = "auto"
    """Winding number: torch, igl (libigl, CPU), or auto (igl for CPU points when installed)."""

    def validate(self) -> None:
        if self.points <= 0 or self.eval_points <= 0 or self.chamfer_points <= 0 or self.chunk <= 0:
            raise UserError("--points, --eval-points, --chamfer-points and --chunk must be positive")
        if not (0 <= self.surface_fraction <= 1):
            raise UserError(f"--surface-fraction must be in [0, 1], got {self.surface_fraction}")
        if not self.surface_sigma or any(not (s >= 0) for s in self.surface_sigma):
            raise UserError(f"--surface-sigma must be one or more non-negative numbers, got {self.surface_sigma}")
        if self.resolution < 2:
            raise UserError(f"--resolution must be at least 2, got {self.resolution}")

    def split(self, total: int) -> tuple[int, int]:
        """`total` points as (near the surface, uniform)."""
        near = round(total * self.surface_fraction)
        return near, total - near


class OccupancyFitter(Fitter):
    """A `Fitter` whose values are occupancies in {0, 1} and whose field outputs logits: binary
    cross-entropy with logits, summed over fields for a stack (each field gets its own gradient)."""

    after_share = 3 / 4
    """A mesh's field is then evaluated on the R³ grid, its surface extracted, scored (Chamfer) and drawn: the
    bunny at 96³ on 2 CPU cores took 12.8 s for 1.0 M final points after steps of 16,384 points in 0.2 s
    (0.69 of a step's time per point, with the reserve's margin). With a third, `--max-seconds 40` ended at
    45.8 s."""

    whole_share = 0.0  # the grid after the fit shrinks to the time left (grid_within): keep at most final_share

    labelled_in_time: int | None = None
    """How many points a labelling under a time limit gave the fit (None: every point, in drawn order)."""

    def state_dict(self) -> dict:
        """The Fitter's state and, after a labelling under a time limit, its point count, which a resumed fit
        labels again whatever its own limit (`fit_mesh`)."""
        state = super().state_dict()
        return state if self.labelled_in_time is None else {**state, "points": self.labelled_in_time}

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        error = F.binary_cross_entropy_with_logits(prediction.float(), target.float(), reduction="none")
        return error.mean(dim=(-2, -1)).sum() if self.stacked else error.mean()


def occupancy_iou(logits: torch.Tensor, occupancy: torch.Tensor) -> float:
    """Intersection over union of predicted (logit > 0) and true (occupancy > 0.5) occupied points."""
    predicted, true = logits > 0, occupancy > 0.5
    union = int((predicted | true).sum())
    return 1.0 if union == 0 else int((predicted & true).sum()) / union


@dataclasses.dataclass
class MeshFitResult:
    field: nn.Module
    config: FieldConfig
    metrics: dict
    """iou (held-out near-surface + uniform points), iou_uniform, chamfer (the mesh's units; None when the
    surface is empty), reconstruction_faces, params, steps, seconds, sample_seconds, device, …"""
    reconstruction: Mesh
    """The field's surface in the mesh's units (0 faces when the field never crosses 0)."""


def refuse_fused_kernel(fit_config: FitConfig) -> None:
    """The fused kernel fits squared errors: an occupancy fit (cross-entropy) refuses `--kernel fused`."""
    if fit_config.kernel == "fused":
        raise UserError("--kernel fused fits a squared error; a mesh's occupancy (cross-entropy) takes the "
                        "reference path")


def fit_mesh(mesh: Mesh, config: FieldConfig, fit_config: FitConfig = FitConfig(),
             occupancy: OccupancyConfig = OccupancyConfig(), *, log_path: Path | None = None,
             tensorboard_dir: Path | None = None, progress: bool = False, checkpoint: Path | None = None,
             resume: bool = False, identity: str = "") -> MeshFitResult:
    """Build a field from `config` (in_dim 3, out_dim 1; seeded) and fit its logit to `mesh`'s occupancy.

    `tensorboard_dir`: the loss (bce) at every logged step and the held-out points' IoU. `checkpoint`,
    `resume` and `identity` are `fit.loop.fit`'s: the Fitter's state is saved in `checkpoint` every
    `CHECKPOINT_SECONDS` of fitting; the points are drawn again from their seeds, as many as the first run
    labelled (under a time limit, a prefix of their seeded order), so a resumed fit ends as the uninterrupted
    one.

    >>> config = make_config("siren", in_dim=3, out_dim=1, hidden_dim=64)
    >>> result = fit_mesh(read_mesh(Path("bunny.obj")), config, FitConfig(steps=2000, batch_size=2**16))
    """
    fit_config.validate()
    occupancy.validate()
    if (config.in_dim, config.out_dim) != (3, 1):
        raise UserError(f"a mesh needs a field with in_dim 3 and out_dim 1, got {config.in_dim} and {config.out_dim}")
    if fit_config.target_psnr:
        raise UserError("--target-psnr does not apply to meshes, whose fits are scored by IoU")
    refuse_fused_kernel(fit_config)
    if occupancy.eval_seed == fit_config.seed:
        raise UserError(f"--seed {fit_config.seed} is the held-out points' seed; pick another")
    device = resolve_device(fit_config.device)
    if not fit_config.batch_size and not fit_config.sample_fraction:
        # Unset: the device's choice (a CPU's is smaller); --batch-size 0: a GPU's.
        batch = (occupancy_points_per_step(device, occupancy.points, config.num_params())
                 if fit_config.batch_size is None else min(OCCUPANCY_POINTS, occupancy.points))
        fit_config = dataclasses.replace(fit_config, batch_size=batch)
        if batch < occupancy.points:
            log.info("meshes are fitted in mini-batches: %s points per step (--batch-size chooses)", f"{batch:,}")
    state = read_checkpoint(checkpoint, identity) if resume else None  # before the points are sampled

    # one deadline for the labelling, the fit (the Fitter takes the active one) and the grid after it
    with _deadline.limit(fit_config.max_seconds) as deadline:
        tick = time.perf_counter()
        # a resumed fit labels the points its first run fitted (`count`), whatever its own limit
        labelling = LABEL_SHARE * deadline.left() if deadline.bounded and state is None else None
        count = state.get("points") if state is not None else None
        points, values = _sample(mesh, occupancy, occupancy.points, fit_config.seed, device, progress, labelling,
                                 count)
        if len(points) < occupancy.points:
            when = "by the run this one resumes" if count else f"in {LABEL_SHARE:.0%} of the time that was left"
            deadline.cut(f"the field is fitted on the {len(points):,} of {occupancy.points:,} points labelled {when}")
        if not bool((values > 0.5).any()):  # an empty field would score IoU 1 against an empty inside
            raise UserError(f"{mesh.source or 'the mesh'} encloses no volume: none of its {len(values):,} sample "
                            "points is inside (a single face, a flat or open surface); occupancy fields need a closed "
                            "mesh")
        held_points, held_values = held_out(mesh, occupancy, device, progress=progress)
        sample_seconds = time.perf_counter() - tick

        torch.manual_seed(fit_config.seed)
        fitter = OccupancyFitter(config.build(), points, values, fit_config, lr=fit_config.lr or type(config).lr,
                                 betas=type(config).adam_betas, eps=type(config).adam_eps)
        fitter.final_points = occupancy.eval_points + occupancy.resolution ** 3
        fitter.labelled_in_time = len(points) if labelling is not None or count is not None else None
        saves = FitterCheckpoints(checkpoint, identity, state)
        _train(fitter, RunLog(log_path, tensorboard_dir, progress, fit_config.steps), saves, held_points, held_values)
        seconds = fitter.elapsed()

        tick = time.perf_counter()
        logits = fitter.predict(held_points)
        resolution = grid_within(deadline, occupancy.resolution, (time.perf_counter() - tick) / len(held_points))
        vertices, faces = extract_mesh(fitter.field, resolution, chunk=fit_config.eval_chunk, device=device,
                                       progress=progress)
        metrics, reconstruction = surface_scores(mesh, dataclasses.replace(occupancy, resolution=resolution), logits,
                                                 held_values, vertices, faces)
        metrics.update({
            "params": config.num_params(), "steps": fitter.step_count, "seconds": round(seconds, 3),
            "compile_seconds": round(fitter.compile_seconds, 3), "sample_seconds": round(sample_seconds, 3),
            "points": len(points), "batch_size": fit_config.batch_size, "device": str(device),
            "precision": fit_config.precision, **deadline.report(),
        })
        return MeshFitResult(field=fitter.field.cpu(), config=config, metrics=metrics, reconstruction=reconstruction)


LABEL_SHARE = 0.3
"""Most of the time left under a command's limit that labelling the training points may take (`label_points`'
`seconds`): on 2 CPU cores a million points of the bunny take 13 s, which left `--max-seconds 20` no time to fit."""
MIN_GRID = 32
"""Fewest samples per axis of a reconstruction grid that a time limit shrinks (`grid_within`)."""
GRID_SHARE = 1.25
"""What a grid point costs, as a multiple of one forward evaluation of a held-out point: on 2 CPU cores the
bunny's 53³ grid took 14 µs a point against 12.7 on the held-out points; marching cubes adds little. The Chamfer
distance and the writes (5-6 s there, whatever the grid) come out of the limit's reserve."""


def grid_within(deadline, resolution: int, point_seconds: float) -> int:
    """The reconstruction grid's samples per axis: `resolution`, or, where the command's time limit would pass
    before a `resolution`³ grid is evaluated (`point_seconds` a point, measured on the held-out points), the
    largest that ends in the time left less half the share kept for writing (at least `MIN_GRID`), said once. On a CPU
    a 256³ grid is 16.8 M forward evaluations: 220 s for the default SIREN, where `--max-seconds 20` was given."""
    if not deadline.bounded:
        return resolution
    budget = deadline.left() - deadline.reserve() / 2  # half the reserve: the Chamfer distance and the writes
    fits = int((max(budget, 0.0) / max(GRID_SHARE * point_seconds, 1e-12)) ** (1 / 3))
    if fits >= resolution:
        return resolution
    smaller = max(MIN_GRID, min(fits, resolution))
    deadline.cut(f"the reconstruction's grid is {smaller}³, not {resolution}³ (--resolution), to end within the "
                 f"limit; `fieldlab render` draws the field's surface at any resolution")
    return smaller


def held_out(mesh: Mesh, occupancy: OccupancyConfig, device: torch.device, *,
             progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out points (eval_points, 3) and their occupancies every mesh fit is scored on."""
    return _sample(mesh, occupancy, occupancy.eval_points, occupancy.eval_seed, device, progress)


def surface_scores(mesh: Mesh, occupancy: OccupancyConfig, logits: torch.Tensor, held_values: torch.Tensor,
                   vertices, faces) -> tuple[dict, Mesh]:
    """The scores every mesh fit reports (iou, iou_uniform, chamfer, …) from the held-out points' logits and
    the extracted surface (canonical coordinates), and that surface as a Mesh in `mesh`'s units."""
    n_near = occupancy.split(occupancy.eval_points)[0]
    reconstruction = Mesh(mesh.from_canonical(vertices), faces, mesh.centre, mesh.scale, source="reconstruction")
    chamfer = mesh_chamfer(mesh.vertices, mesh.faces, reconstruction.vertices, faces,
                           points=occupancy.chamfer_points, seed=occupancy.eval_seed)
    metrics = {
        "iou": round(occupancy_iou(logits, held_values), 6),
        "iou_uniform": round(occupancy_iou(logits[n_near:], held_values[n_near:]), 6),
        "chamfer": float(f"{chamfer:.6g}") if math.isfinite(chamfer) else None,
        "reconstruction_faces": len(faces), "resolution": occupancy.resolution,
    }
    return metrics, reconstruction


def _sample(mesh: Mesh, occupancy: OccupancyConfig, total: int, seed: int, device: torch.device,
            progress: bool = False, seconds: float | None = None,
            count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    near, uniform = occupancy.split(total)
    return sample_occupancy(mesh, n_surface=near, n_uniform=uniform, sigma=occupancy.surface_sigma, seed=seed,
                            device=device, chunk=occupancy.chunk, backend=occupancy.backend, progress=progress,
                            seconds=seconds, count=count)


def _train(fitter: OccupancyFitter, log: RunLog, saves: FitterCheckpoints, held_points: torch.Tensor,
           held_values: torch.Tensor) -> None:
    """Step until the fitter stops, logging the loss (binary cross-entropy) every `log_every` steps, and
    TensorBoard the held-out IoU (an evaluation, outside the fitting time)."""
    every = fitter.config.log_every
    try:
        saves.restore(fitter, log)
        while not fitter.should_stop():
            loss = fitter.step()
            step = fitter.step_count
            log.advance(step, fitter.keep_seconds(), fitter.deadline)  # the bar each second, its ETA from the limit
            if step % every == 0 or step == fitter.config.steps:
                loss_value = float(loss)
                if not math.isfinite(loss_value):
                    raise loop.diverged(step, f"loss is {loss_value}", fitter.schedule.peak)
                log.record(step, fitter.last_lr, fitter.elapsed(), bce=loss_value)
                if log.writer:
                    with fitter.paused():
                        log.scalar("iou", occupancy_iou(fitter.predict(held_points), held_values), step)
                saves.maybe_save(fitter, log)
    finally:
        log.close()
