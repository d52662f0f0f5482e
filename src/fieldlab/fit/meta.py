"""Meta-learning for latent-modulated fields (functa, spatial functa), and fitting a dataset's latents.

The shared network θ is meta-learned so that a few gradient steps on a zero latent fit any datum
(CAVIA / MAML with Meta-SGD, as in functa, Dupont et al. 2022):

    φ₀ = 0,   φ_{k+1} = φ_k − α ⊙ ∇_φ MSE(f_{θ, φ_k}),   k < K          (inner loop, per datum)
    θ, α  ←  Adam(∇_{θ, α} MSE(f_{θ, φ_K}))                              (outer loop, over a batch)

α holds one learned rate per latent value (clipped to [0, 1], times the field's `latent_rate_scale`).
The outer gradient is second-order through the K inner steps unless `first_order`. Against the
periodic PSNR collapse of the unofficial spatial-functa code, the outer step warms its learning rate
up, clips the global gradient norm and skips a step whose gradient is not finite.

Everything runs through the batched path: a `FieldStack` whose shared parameters are θ and whose
per-field tensor is the latent, so a batch of data is one vmapped call. Under torch.distributed each
rank takes its share of each batch and the outer gradients are averaged with an all-reduce before clipping.

Lifecycle::

    learner = MetaLearner(config, coords, MetaConfig(...))   # config: a latent-modulated FieldConfig
    for step in range(meta.steps):
        learner.step(learner.sample(values))                 # values (N, n, c): the training data
    latents, psnr = learner.fit_latents(values)              # the same inner loop, in batches
    stack = learner.stack(latents)                           # the fitted fields, (f, n, d) → (f, n, c)

Shapes: f fields (data), n points, d coordinate dims, c channels.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import typing
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from fieldlab import _deadline, distributed
from fieldlab._errors import UserError
from fieldlab._progress import phase
from fieldlab._optim import Adam
from fieldlab.fields import FieldConfig, FieldStack, FunctaConfig, Latent, SpatialFunctaConfig, coerce_option
from fieldlab.fields.functa import LATENT
from fieldlab.fit.batched import BatchedFitConfig, BatchResult, DatasetFitter, register_dataset_fitter
from fieldlab.fit.checkpoint import read_checkpoint
from fieldlab.fit.checkpoint import save as save_checkpoint
from fieldlab.fit.loop import matmul_precision, resolve_device
from fieldlab.fit.metrics import field_psnrs
from fieldlab.fit.points import generator, with_replacement
from fieldlab.fit.schedule import Schedule

log = logging.getLogger("fieldlab")


@dataclasses.dataclass(frozen=True)
class MetaConfig:
    """How to meta-learn a shared network and fit latents."""

    steps: int = 1000
    """Outer (meta) steps."""
    batch_size: int = 16
    """Data per outer step, over all processes."""
    inner_steps: int = 3
    """Gradient steps on the latent, in training and when fitting (functa: 3)."""
    lr: float = 1e-4
    """Peak Adam learning rate of the outer loop (functa's 3e-6 is for width 512, depth 15)."""
    lr_final: float = 0.1
    """Outer learning rate at the last step, as a fraction of `lr` (cosine decay after warm-up)."""
    warmup: int = 100
    """Outer steps of linear learning-rate warm-up (stability)."""
    clip_norm: float = 1.0
    """Clip the global norm of the outer gradient to this; 0 turns clipping off (stability)."""
    first_order: bool = False
    """Drop the second-order terms of the outer gradient (cheaper, usually a little worse)."""
    rate_init: tuple[float, float] = (0.005, 0.1)
    """Meta-SGD rates start uniform in this range (functa's), before the field's rate scale."""
    jitter: float = 1.0
    """Besides the sample centres, the outer loss scores each field at points moved off them by up to this
    fraction of a sample spacing (uniform, a new draw per step), against the multilinear interpolation of the
    datum: the shared network learns fields that are smooth between the samples. 0 scores the centres only
    (functa's). The inner loop always fits the centres, in training and when fitting a dataset."""
    between_weight: float = 0.03
    """Weight of the jittered points' error in the outer loss, relative to the centres'. On 8×8 photos
    (benchmarks/functa_between.py) 0.03 keeps the centres' PSNR within 1 dB of functa's own (40.2 against
    41.1 dB) and lifts the PSNR between them from 13.4 to 20.9 dB against the photo (1: 34.0 and 22.1 dB);
    spatial functa's choice by the same rule is 0.03 too (59.3 against 60.1 dB, 19.6 to 21.1 dB; 0.1 loses
    2.4 dB at the centres)."""
    fit_batch_size: int = 256
    """Data per batch when fitting a dataset's latents."""
    seed: int = 0
    """Seed of the shared network's initialisation, the rates and the batches."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""

    def validate(self) -> None:
        for name in ("steps", "batch_size", "inner_steps", "fit_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not (0 < self.lr < 1):
            raise UserError(f"--lr must be in (0, 1), got {self.lr}")
        if not (0 < self.lr_final <= 1):
            raise UserError(f"--lr-final must be in (0, 1], got {self.lr_final}")
        if self.between_weight < 0:
            raise UserError(f"--between-weight must be non-negative, got {self.between_weight}")
        if not (0 <= self.jitter <= 1):
            raise UserError(f"--jitter must be in [0, 1] (a fraction of a sample spacing), got {self.jitter}")
        if self.warmup < 0 or self.clip_norm < 0:
            raise UserError("--warmup and --clip-norm must be non-negative")
        low, high = self.rate_init
        if not (0 <= low <= high <= 1):
            raise UserError(f"--rate-init must be two rates 0 ≤ low ≤ high ≤ 1, got {self.rate_init}")


def check_latent_field(config: FieldConfig) -> None:
    """Meta-learning needs a field with a per-field `latent` (functa, spatial functa)."""
    if not isinstance(config, Latent):
        raise UserError(f"field {config.name!r} has no latent to meta-learn; use functa or spatial_functa")


def grid_shape(coords: torch.Tensor) -> tuple[int, ...] | None:
    """Samples per axis of `coords` (n, d) when they are a full row-major grid of centres (`grid_coords`)."""
    shape = tuple(len(torch.unique(coords[:, a])) for a in range(coords.shape[1]))
    return shape if math.prod(shape) == len(coords) else None


def interpolate(values: torch.Tensor, shape: tuple[int, ...], points: torch.Tensor) -> torch.Tensor:
    """Multilinear interpolation (f, m, c) of grid `values` (f, n, c) of `shape` at `points` (f, m, d) in
    [-1, 1]; beyond the outermost centres the nearest value holds (as `grid_sample`'s border padding)."""
    strides = [math.prod(shape[a + 1:]) for a in range(len(shape))]
    lows, fracs = [], []
    for a, size in enumerate(shape):
        t = ((points[..., a] + 1) / 2 * size - 0.5).clamp(0, size - 1)  # centres sit at integer t
        low = t.floor().clamp(max=max(size - 2, 0))
        lows.append(low.long())
        fracs.append(t - low)
    result = 0
    for corner in range(2 ** len(shape)):
        index, weight = 0, 1
        for a, size in enumerate(shape):
            up = (corner >> a) & 1
            index = index + (lows[a] + up).clamp(max=size - 1) * strides[a]
            weight = weight * (fracs[a] if up else 1 - fracs[a])
        gathered = values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))  # (f, m, c)
        result = result + weight[..., None] * gathered
    return result


class MetaLearner:
    """The shared network θ and the Meta-SGD rates α of one latent-modulated architecture; see the
    module docstring for the lifecycle. `coords` (n, d) is the sample grid every datum shares."""

    def __init__(self, config: FieldConfig, coords: torch.Tensor, meta: MetaConfig = MetaConfig()):
        check_latent_field(config)
        meta.validate()
        self.config, self.meta = config, meta
        self.device = resolve_device(meta.device)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        torch.manual_seed(meta.seed)  # every rank builds the same θ and α
        template = config.build().to(self.device)
        # Copies: the stack turns its template into a meta-device skeleton.
        shared = {name: nn.Parameter(p.detach().clone()) for name, p in template.named_parameters() if name != LATENT}
        self.latent_shape = tuple(config.latent_shape())
        self.rate_scale = config.latent_rate_scale()
        low, high = meta.rate_init
        self.rates = nn.Parameter(torch.empty(self.latent_shape, device=self.device).uniform_(low, high))
        empty = torch.zeros((0, *self.latent_shape), device=self.device)
        self.fields = FieldStack(template, {LATENT: empty}, {}, shared=shared)
        self.coords = coords.to(self.device)
        self.grid = grid_shape(self.coords) if meta.jitter else None
        if meta.jitter and self.grid is None:
            raise ValueError("jitter needs the coordinates of a full grid of sample centres (grid_coords)")
        self.jitter_generator = generator(meta.seed + 1)  # the same draws on every rank
        self.parameters = [*self.fields.shared.parameters(), self.rates]
        self.optimizer = Adam(self.parameters, lr=meta.lr)
        self.schedule = Schedule(meta.lr, meta.steps, "cosine", final=meta.lr_final, warmup=meta.warmup)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule.factor)
        if meta.batch_size % self.world:
            raise UserError(f"the meta batch size {meta.batch_size} must be a multiple of the {self.world} processes")
        self.generator = generator(meta.seed)  # the same draws on every rank
        self.step_count = 0
        self.skipped = 0
        self._broadcast()

    # -- the inner loop -------------------------------------------------------------------------
    def field_errors(self, latents: torch.Tensor, values: torch.Tensor,
                     points: torch.Tensor | None = None) -> torch.Tensor:
        """Per-field mean squared error (f,) of the fields with `latents` (f, …) against `values` (f, n, c),
        at the sample centres, or at `points` (f, m, d) against the values' interpolation there."""
        if points is None:
            points = self.coords.expand(len(latents), -1, -1)
        else:
            values = interpolate(values, self.grid, points)
        prediction = self.fields(points, {LATENT: latents})
        return (prediction - values).square().mean(dim=(-2, -1))

    def off_centre(self, count: int) -> torch.Tensor | None:
        """This rank's share of `count` · world jittered copies (count, n, d) of the centres (None without jitter,
        or when their error weighs nothing: no forward and backward pass a step for a term multiplied by 0).

        Every rank draws the points of the whole batch, so N processes train exactly as one."""
        if not self.meta.jitter or not self.meta.between_weight:
            return None
        n, d = self.coords.shape
        spacing = torch.tensor([2 / size for size in self.grid])
        offsets = (torch.rand(count * self.world, n, d, generator=self.jitter_generator) - 0.5) * spacing
        offsets = offsets[self.rank::self.world].to(self.device, self.coords.dtype)
        return (self.coords + self.meta.jitter * offsets).clamp(-1, 1)

    def inner_rates(self) -> torch.Tensor:
        return self.rates.clamp(0, 1) * self.rate_scale

    def adapt(self, values: torch.Tensor, *, steps: int | None = None, create_graph: bool = False) -> torch.Tensor:
        """Latents (f, …) after the inner loop from φ₀ = 0 on `values` (f, n, c).

        The summed per-field loss gives each latent exactly its own field's gradient. With
        `create_graph` the result is differentiable to second order in θ and α; without it, only the
        last forward and α's direct use carry gradients (first-order MAML).
        """
        values = values.to(self.device)
        rates = self.inner_rates()
        latents = torch.zeros((len(values), *self.latent_shape), device=self.device, dtype=values.dtype,
                              requires_grad=True)
        for _ in range(self.meta.inner_steps if steps is None else steps):
            loss = self.field_errors(latents, values).sum()
            (grad,) = torch.autograd.grad(loss, latents, create_graph=create_graph)
            latents = latents - rates * grad
        return latents

    # -- the outer loop -------------------------------------------------------------------------
    def sample_rows(self, count: int) -> torch.Tensor:
        """This rank's share of a random batch of `batch_size` rows of `count`.

        Every rank draws the same global batch and takes every world-th row, so the all-reduced mean
        gradient is the gradient of the whole batch: N processes train exactly as one.
        """
        index = with_replacement(count, self.meta.batch_size, self.generator)
        return index[self.rank::self.world]

    def sample(self, values: torch.Tensor) -> torch.Tensor:
        """This rank's share (`batch_size` / world, n, c) of a random batch of `values` (N, n, c)."""
        return values[self.sample_rows(len(values))]

    def step(self, values: torch.Tensor) -> float:
        """One outer step on a batch `values` (f, n, c); returns the batch's mean PSNR after the inner loop."""
        values = values.to(self.device)
        latents = self.adapt(values, create_graph=not self.meta.first_order)
        errors = self.field_errors(latents, values)
        loss = errors.mean()
        between = self.off_centre(len(values))
        if between is not None:  # the outer loss also reads the adapted fields between the centres (`jitter`)
            loss = loss + self.meta.between_weight * self.field_errors(latents, values, between).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        finite = self._reduce_and_clip()
        if finite:
            self.optimizer.step()
            self.scheduler.step()
        else:  # a non-finite gradient would poison Adam's moments: drop the step
            self.skipped += 1
        self.step_count += 1
        return float(field_psnrs(errors.detach()).mean())

    def _reduce_and_clip(self) -> bool:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.parameters]
        if self.world > 1:
            flat = distributed.all_reduce_(torch.cat([g.reshape(-1) for g in grads]))
            flat /= self.world
            offset = 0
            for p, g in zip(self.parameters, grads):
                p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
                offset += g.numel()
        norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.meta.clip_norm or math.inf)
        return bool(torch.isfinite(norm))

    def _broadcast(self) -> None:
        """Start every rank from rank 0's θ and α (they are seeded alike; this makes it certain)."""
        if self.world > 1:
            with torch.no_grad():
                for p in self.parameters:
                    distributed.broadcast_(p.data)

    def train(self, values: torch.Tensor, *, steps: int | None = None, log=None) -> list[float]:
        """Outer steps on random batches of `values` (N, n, c); returns the PSNR history.
        `log(step, psnr)` is called every step when given."""
        history = []
        for _ in range(self.meta.steps if steps is None else steps):
            history.append(self.step(self.sample(values)))
            if log is not None:
                log(self.step_count, history[-1])
        return history

    # -- fitting a dataset ----------------------------------------------------------------------
    def fit_latents(self, values: torch.Tensor, *, steps: int | None = None,
                    batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (N, …) and per-field PSNR (N,) of `values` (N, n, c), by the inner loop, in batches."""
        batch_size = batch_size or self.meta.fit_batch_size
        latents, psnrs = [], []
        for start in range(0, len(values), batch_size):
            batch = values[start:start + batch_size].to(self.device)
            fitted = self.adapt(batch, steps=steps).detach()
            with torch.no_grad():
                errors = self.field_errors(fitted, batch)
            latents.append(fitted.cpu())
            psnrs.append(field_psnrs(errors).cpu())
        return torch.cat(latents), torch.cat(psnrs)

    def stack(self, latents: torch.Tensor) -> FieldStack:
        """The fitted fields: θ (a copy, shared) and `latents` (f, …) as one `FieldStack`."""
        shared = {name: p.detach().clone() for name, p in self.fields.shared_params().items()}
        return FieldStack(self.fields._template[0], {LATENT: latents.detach().clone()}, {}, shared=shared)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """θ and α, flat: the shared weights a store keeps beside the latents."""
        state = {name: p.detach().cpu() for name, p in self.fields.shared_params().items()}
        state["meta_rates"] = self.rates.detach().cpu()
        return state

    def training_state(self) -> dict:
        """Everything meta-learning needs to go on as if never stopped: θ and α, Adam, the schedule, both
        generators and the step count (`load_training_state`; a checkpoint's contents, no pickle)."""
        return {"weights": self.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"},
                "generator": self.generator.get_state(), "jitter_generator": self.jitter_generator.get_state(),
                "step_count": self.step_count, "skipped": self.skipped}

    def load_training_state(self, state: dict) -> None:
        self.load_state_dict(state["weights"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(self.optimizer.param_groups)})
        self.generator.set_state(state["generator"])
        self.jitter_generator.set_state(state["jitter_generator"])
        self.step_count, self.skipped = int(state["step_count"]), int(state["skipped"])

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.fields.shared_params()) | {"meta_rates"}
        if set(state) != expected:
            raise UserError(f"the shared weights do not match the {self.config.name} config "
                            f"(missing {sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]})")
        with torch.no_grad():
            for name, p in self.fields.shared_params().items():
                if p.shape != state[name].shape:
                    raise UserError(f"shared weight {name} has shape {tuple(state[name].shape)}, expected {tuple(p.shape)}")
                p.copy_(state[name])
            self.rates.copy_(state["meta_rates"])


# -- fit-dataset ---------------------------------------------------------------------------------
META_OPTIONS = {"meta_steps": "steps", "meta_batch_size": "batch_size", "meta_lr": "lr", "inner_steps": "inner_steps",
                "warmup": "warmup", "clip_norm": "clip_norm", "first_order": "first_order", "jitter": "jitter",
                "between_weight": "between_weight"}
"""`fieldlab fit-dataset` flags (as --meta-steps …) → `MetaConfig` fields."""
PER_FIELD_FIT = ("steps", "lr", "lr_final", "init", "target_psnr", "target_accuracy", "target_snr", "check_every",
                 "sample_fraction")
"""`BatchedFitConfig` options that describe independent fits, meaningless for a meta-learned family."""


def meta_config_from_options(options: dict, *, seed: int = 0, device: str = "auto") -> MetaConfig:
    """A `MetaConfig` from CLI strings or JSON values keyed as in `META_OPTIONS`."""
    hints = typing.get_type_hints(MetaConfig)
    unknown = sorted(set(options) - set(META_OPTIONS))
    if unknown:
        raise UserError(f"--{unknown[0].replace('_', '-')} is not a meta-learning option")
    meta = MetaConfig(**{META_OPTIONS[k]: coerce_option(k, v, hints[META_OPTIONS[k]]) for k, v in options.items()},
                      seed=seed, device=device)
    try:
        meta.validate()
    except UserError as error:  # name the flag as the command line spells it (--meta-lr, not --lr)
        message = str(error)
        for flag, name in META_OPTIONS.items():
            if flag != name:
                message = message.replace(f"--{name.replace('_', '-')} ", f"--{flag.replace('_', '-')} ")
        raise UserError(message) from None
    return meta


@dataclasses.dataclass
class PrepareCheckpoint:
    """Where `fit-dataset` keeps meta-learning's state until the store holds θ and α (beside the store, as a
    fit's checkpoint beside its DIR): read back with `resume`; rank 0 writes it, whole or not at all, with the
    job's `identity` so that a resume with other options is refused."""

    path: Path
    identity: str
    resume: bool = False

    def load(self) -> dict | None:
        """The state to go on from: the checkpoint when resuming and there is one, else None (a new run)."""
        return read_checkpoint(self.path, self.identity) if self.resume and self.path.is_file() else None

    def save(self, learner: MetaLearner) -> None:
        if learner.rank == 0:
            save_checkpoint(learner.training_state(), None, self.path, self.identity)


class MetaDatasetFitter(DatasetFitter):
    """`fit-dataset` for latent fields: meta-learns θ and α on the training rows (`prepare`, on every rank,
    gradients all-reduced), then fits each batch's latents with the same inner loop. The store keeps θ and
    α once (`shared`) and one latent per row."""

    steps_of_fit = False  # a batch's latents take the meta-learned inner steps, without a progress callback

    def __init__(self, config: FieldConfig, fit: BatchedFitConfig, meta_options: dict | None = None):
        super().__init__(config, fit)
        default = BatchedFitConfig()
        changed = [k for k in PER_FIELD_FIT if getattr(fit, k) != getattr(default, k)]
        if changed:
            raise UserError(f"--{changed[0].replace('_', '-')} does not apply to {config.name}; give --meta-steps, "
                            "--meta-batch-size, --meta-lr, --inner-steps, --warmup, --clip-norm, --first-order, "
                            "--jitter or --between-weight")
        if fit.precision == "bf16":
            raise UserError(f"--precision bf16 is not supported for {config.name}; use fp32 or tf32")
        if fit.kernel == "fused":
            raise UserError(f"--kernel fused does not apply to {config.name}: its latents are fitted by the "
                            "meta-learned inner loop; leave --kernel at auto")
        self.meta = meta_config_from_options(meta_options or {}, seed=fit.seed, device=fit.device)
        self.learner: MetaLearner | None = None
        self._stored: dict[str, torch.Tensor] | None = None

    def describe(self) -> str:
        return "meta-learned shared network, latents fitted by its inner loop (FieldStack)"

    def _learner(self, coords: torch.Tensor) -> MetaLearner:
        if self.learner is None:
            self.learner = MetaLearner(self.config, coords, self.meta)
        if self._stored is not None:  # a resumed run: θ and α come from the store
            self.learner.load_state_dict(self._stored)
            self._stored = None
        return self.learner

    def prepare(self, rows, values_of, coords: torch.Tensor, checkpoint: PrepareCheckpoint | None = None,
                progress: bool = False) -> bool:
        """Meta-learn θ and α on `rows`. With `checkpoint`, continue from its state and save it every
        `CHECKPOINT_SECONDS` (rank 0), and stop early, saved, where the command's --max-seconds would pass
        (False: meta-learning is not finished and no store can be made yet). `progress`: a bar on rank 0 (its
        PSNR after the inner steps beside the count), else a log line every tenth of the steps."""
        from fieldlab.fit import loop

        learner = self._learner(coords)
        rows = np.asarray(rows)
        every = max(1, self.meta.steps // 10)
        state = checkpoint.load() if checkpoint is not None else None
        if state is not None:
            learner.load_training_state(state)
            log.info("meta-learning %s: resuming at step %d/%d (%s)", self.config.name, learner.step_count,
                     self.meta.steps, checkpoint.path)
        deadline, saved, step_seconds = _deadline.active(), time.perf_counter(), 0.0
        bar, psnr = progress and learner.rank == 0, None
        with matmul_precision(self.fit_config.precision), \
                phase(f"meta-learning {self.config.name}", self.meta.steps, bar=bar) as advance:
            advance(learner.step_count)  # a resumed run's steps so far
            for step in range(learner.step_count + 1, self.meta.steps + 1):
                if checkpoint is not None and deadline.out_of_time(keep=deadline.reserve(after=2 * step_seconds)):
                    checkpoint.save(learner)
                    deadline.cut(f"meta-learning stopped after step {step - 1} of {self.meta.steps}; no store is "
                                 f"made yet, and --resume goes on from the checkpoint {checkpoint.path}")
                    return False
                began = time.perf_counter()
                psnr = learner.step(values_of(rows[learner.sample_rows(len(rows)).numpy()]))
                step_seconds = max(step_seconds, time.perf_counter() - began)
                advance(1, note=f"{psnr:.2f} dB after {self.meta.inner_steps} inner steps")
                if step % every == 0 and learner.rank == 0 and not bar:
                    log.info("meta-learning %s: step %d/%d, %.2f dB after %d inner steps", self.config.name, step,
                             self.meta.steps, psnr, self.meta.inner_steps)
                if (checkpoint is not None and step < self.meta.steps
                        and time.perf_counter() - saved >= loop.CHECKPOINT_SECONDS):
                    checkpoint.save(learner)
                    saved = time.perf_counter()
        if bar and psnr is not None:  # the bar leaves no line behind: where meta-learning ended, once
            log.info("meta-learning %s: %d steps, %.2f dB after %d inner steps", self.config.name, self.meta.steps,
                     psnr, self.meta.inner_steps)
        return True

    def load_shared(self, shared: dict[str, torch.Tensor]) -> None:
        self._stored = shared

    def shared(self) -> dict[str, torch.Tensor]:
        return self.learner.state_dict()

    def per_field_shapes(self) -> dict[str, tuple[int, ...]]:
        return {LATENT: tuple(self.config.latent_shape())}

    def fit(self, coords: torch.Tensor, values: torch.Tensor, rows, progress=None) -> BatchResult:
        learner = self._learner(coords)
        with matmul_precision(self.fit_config.precision):
            latents, psnr = learner.fit_latents(values)
        steps = np.full(len(latents), self.meta.inner_steps, dtype=np.int32)
        return BatchResult({LATENT: latents}, psnr.float().numpy(), steps)


register_dataset_fitter(FunctaConfig, MetaDatasetFitter)
register_dataset_fitter(SpatialFunctaConfig, MetaDatasetFitter)


def make_dataset_fitter(config: FieldConfig, fit: BatchedFitConfig, meta_options: dict | None = None) -> DatasetFitter:
    """The fitter `fit-dataset` uses: meta-learning for latent fields, the registered one otherwise."""
    from fieldlab.fit.batched import dataset_fitter

    if isinstance(config, Latent):
        return MetaDatasetFitter(config, fit, meta_options)
    if meta_options:
        raise UserError(f"--{next(iter(meta_options)).replace('_', '-')} applies to functa and spatial_functa only")
    return dataset_fitter(config, fit)
