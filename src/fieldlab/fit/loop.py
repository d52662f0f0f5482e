"""The fitting loop: one exposed step (`Fitter.step`) and a plain function around it (`fit`).

Works for one field (coords (n, d), values (n, c)) and for a `FieldStack` of f fields
(coords (f, n, d), values (f, n, c)); the stack's loss is the sum of per-field mean squared errors, so
each field gets exactly the gradient it would get alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from fieldlab import _deadline, _json
from fieldlab._errors import UserError
from fieldlab._progress import QUIET_AFTER
from fieldlab._optim import Adam
from fieldlab.fields import FieldConfig, TrainsOnOwnPoints
from fieldlab.fit.checkpoint import FitterCheckpoints, read_checkpoint
from fieldlab.fit.config import FitConfig, points_per_step, single_kernel
from fieldlab.fit.device_defaults import resolve_batch, resolve_fit_config
from fieldlab.fit.own_engines import engine_for
from fieldlab.fit.metrics import metrics_for, psnr_from_mse
from fieldlab.fit.points import generator, step_points
from fieldlab.fit.schedule import Schedule
from fieldlab.kernels import FusedSingle
from fieldlab.signals import Signal, get_modality

if TYPE_CHECKING:
    from fieldlab.kernels import FusedSpec

logger = logging.getLogger("fieldlab")


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; an unavailable device is a `UserError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return device


_WARMED: set[str] = set()


def warm_device(device: torch.device | str) -> None:
    """Make `device`'s CUDA context on a daemon thread, once a process, so that a command's checks and
    reading overlap it: the context takes 0.3-0.4 s on an H200's host, and there the first tensor moved
    to the GPU paid it on the command's path (`benchmarks/command_overhead.py`'s prepare phase). The
    thread holds the interpreter for part of it: measured, an init beside 0.3 s of Python took 0.48 s
    against 0.61-0.71 s in turn. `device` may be a --device name not yet resolved (auto, cuda, cuda:N): the
    thread then also makes CUDA's first call (whether a GPU is there: 0.2 s on an H100's host), and `cpu`
    does nothing. Once CUDA is there, Triton's compiler is prepared beside it (`kernels.fused.
    prepare_compiler`). Nothing on a CPU; a failure is left for the command's own first CUDA call to report
    (the thread says nothing)."""
    name = str(device)
    if not (name == "auto" or name.startswith("cuda")) or name in _WARMED:
        return
    _WARMED.add(name)
    import threading

    def warm() -> None:
        try:
            if name == "auto" and not torch.cuda.is_available():
                return
            from fieldlab.kernels.fused import prepare_compiler

            prepare_compiler()
            torch.zeros(1, device="cuda" if name == "auto" else name)
        except Exception:  # noqa: BLE001 -- the command's first CUDA call raises it again, where it is handled
            pass

    threading.Thread(target=warm, name="fieldlab-cuda-context", daemon=True).start()


class Fitter:
    """Fits `field` to `values` at `coords` with Adam and an exponentially decaying learning rate.

    Lifecycle::

        fitter = Fitter(field, coords, values, config, lr=..., betas=..., eps=...)
        while not fitter.should_stop():  # or any loop of your own
            loss = fitter.step()         # one Adam step; returns the batch loss, unsynchronised
        prediction = fitter.predict()    # every coordinate, in chunks, fp32

    `fused_spec`, the `FusedSpec` of a single field (from `single_kernel`), steps it with the fused Triton
    kernel instead of autograd and fieldlab's Adam: the kernel then holds the parameters and Adam's moments,
    and `field` is brought up to date whenever it is read.

    A Fitter is an engine of `fit.engine.Stepper`'s contract, except that it keeps its fields to the end
    (no `select`), and that the fused kernel's state is not saved (`state_dict` is the reference path's).
    """

    final_points: int | None = None
    """The points evaluated after the fit, which a time limit keeps time for (None: the training points;
    a mesh's are its held-out points and marching-cubes grid)."""

    def __init__(self, field: nn.Module, coords: torch.Tensor, values: torch.Tensor, config: FitConfig, *,
                 lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 fused_spec: FusedSpec | None = None):
        config.validate()
        self.device = resolve_device(config.device)
        # An unset time limit or batch size becomes the device's (`fit.device_defaults`).
        self.config = config = resolve_fit_config(config, self.device, points=coords.shape[-2],
                                                  params=sum(p.numel() for p in field.parameters()))
        self._field, self._fused = field.to(self.device), None
        self.coords = coords.to(self.device)
        self.values = values.to(self.device)
        self.stacked = coords.ndim == 3
        self.num_points = coords.shape[-2]
        self.optimizer = Adam(self.field.parameters(), lr=lr, betas=betas, eps=eps)
        self.schedule = Schedule(lr, config.steps, "exponential", final=config.lr_final, warmup=config.warmup)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule.factor)
        if fused_spec is not None:
            if self.stacked or config.compile or type(self).loss is not Fitter.loss:
                raise ValueError("the fused kernel fits one field, uncompiled, on the mean squared error")
            self._fused = FusedSingle(self._field, fused_spec, self.coords, self.values, precision=config.precision,
                                      betas=betas, eps=eps, lr_at=self.schedule.lr)
        # fp16's 5 exponent bits would flush a mean squared error's small gradients to zero: the loss is scaled
        # up (dynamically, halved on an overflow, whose step is skipped) and Adam unscales the gradients.
        self.scaler = torch.amp.GradScaler(self.device.type) if config.precision == "fp16" else None
        self.generator = generator(config.seed, self.device)
        # Forward and loss are compiled together so the loss's elementwise work fuses into the graph.
        self._batch_loss = torch.compile(self._loss_at) if config.compile else self._loss_at
        self.step_count = 0
        self.seconds = 0.0
        self.compile_seconds = 0.0
        self.last_psnr = -math.inf
        self._tick = None
        # The command's --max-seconds (which leaves time for what follows the fit), else this fit's.
        self.deadline = _deadline.active().bounded_by(config.max_seconds)
        self.step_seconds = 0.0

    @property
    def field(self) -> nn.Module:
        """The field being fitted, with its current parameters."""
        if self._fused is not None:
            self._fused.write_back(self._field)
        return self._field

    @field.setter
    def field(self, module: nn.Module) -> None:
        self._field = module

    @property
    def last_lr(self) -> float:
        """The learning rate of the schedule after the steps so far (torch's `get_last_lr`), on either path."""
        return self.schedule.lr(self.step_count)

    @property
    def kernel(self) -> str:
        """Which path does the steps: fused (the Triton kernel) or reference (autograd and fieldlab's Adam)."""
        return "reference" if self._fused is None else "fused"

    @property
    def name(self) -> str:
        """`kernel`, under the name the engine contract (`fit.engine.Stepper`) asks for."""
        return self.kernel

    # -- one step -------------------------------------------------------------------------------
    def _index(self) -> torch.Tensor | None:
        """The points (k,) of this step, drawn with replacement; None for every point."""
        size = points_per_step(self.config, self.num_points)
        return step_points(self.num_points, size, self.generator, self.device)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._index()
        if index is None:
            return self.coords, self.values
        return self.coords[..., index, :], self.values[..., index, :]

    def _autocast(self):
        return autocast_for(self.config.precision, self.device)

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error, summed over fields for a stack."""
        error = (prediction.to(target.dtype) - target).square()
        return error.mean(dim=(-2, -1)).sum() if self.stacked else error.mean()

    def _loss_at(self, coords: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            prediction = self.field(coords)
        return self.loss(prediction, target)

    def step(self) -> torch.Tensor:
        """One Adam step on a batch; returns the batch loss (not synchronised with the device)."""
        if self._tick is None:
            self._tick = time.perf_counter()
        began = time.perf_counter()
        if self._fused is not None:  # the kernel takes its learning rates from the schedule itself
            loss = self._fused.step(self._index())
        else:
            coords, target = self._batch()
            with matmul_precision(self.config.precision):
                loss = self._batch_loss(coords, target)
                self.optimizer.zero_grad(set_to_none=True)
                (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            if self.scaler is None:
                self.optimizer.step()
            else:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.scheduler.step()
        self.step_count += 1
        self.step_seconds = time.perf_counter() - began
        if self.step_count == 1:
            if self.config.compile or self._fused is not None:
                # Compilation (torch.compile's or Triton's) is kept out of the fitting time.
                self._sync()
                self.compile_seconds = time.perf_counter() - self._tick
                self._tick = time.perf_counter()
            # Nor is the first step a step's cost: timed with compilation, it made the time limit's estimate of
            # the final evaluation exceed what was left (--compile --max-seconds 100 stopped after 1 step); with
            # its warm-up alone (allocations, threads), a mesh's first 4,096-point CPU step (0.6 s) made that
            # estimate 109 s, which stopped `fit bunny.obj` after that step.
            self.step_seconds = 0.0
        return loss.detach()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def elapsed(self) -> float:
        """Seconds of fitting so far (synchronises with the device)."""
        self._sync()
        if self._tick is not None:
            now = time.perf_counter()
            self.seconds += now - self._tick
            self._tick = now
        return self.seconds

    @contextlib.contextmanager
    def paused(self):
        """Work inside this block (evaluation, logging) does not count as fitting time."""
        self.elapsed()
        try:
            yield
        finally:
            self._sync()
            if self._tick is not None:
                self._tick = time.perf_counter()

    # -- the engine contract (`fit.engine.Stepper`) --------------------------------------------------
    def run(self, first: int, end: int) -> None:
        """Steps first … end − 1; a fit steps on from where it is, so `first` is `step_count`."""
        if first != self.step_count:
            raise ValueError(f"this fit has done {self.step_count} steps; it cannot run from step {first}")
        while self.step_count < end:
            self.step()

    def parameters(self) -> dict[str, torch.Tensor]:
        """The field's parameters by module name (stacked (f, …) for a `FieldStack`)."""
        from fieldlab.fields import FieldStack

        field = self.field
        named = field.state()[0].items() if isinstance(field, FieldStack) else field.named_parameters()
        return {name: value.detach() for name, value in named}

    def state_dict(self) -> dict:
        """Step, field, Adam, schedule and sampling generator: a resumed fit steps on as this one would."""
        if self._fused is not None:
            raise ValueError("the fused kernel holds Adam's state itself; its fits keep no state_dict")
        return {"step": self.step_count, "field": self.field.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"},
                "generator": self.generator.get_state(),
                **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.field.load_state_dict(state["field"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(self.optimizer.param_groups)})
        self.generator.set_state(state["generator"].cpu())
        self.step_count = state["step"]

    def select(self, rows: torch.Tensor) -> None:
        raise ValueError("a Fitter fits its fields to the end; fit_batch's engines let fields leave")

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, coords: torch.Tensor | None = None) -> torch.Tensor:
        """Values at `coords` (default: every training coordinate), in chunks, in the values' dtype."""
        coords = self.coords if coords is None else coords.to(self.device)
        chunk = self.config.eval_chunk
        parts = [self.field(coords[..., i:i + chunk, :]).to(self.values.dtype) for i in range(0, coords.shape[-2], chunk)]
        return torch.cat(parts, dim=-2)

    def full_psnr(self) -> float:
        """PSNR of the whole signal (the worst field's, for a stack)."""
        error = (self.predict() - self.values).square().mean(dim=(-2, -1))
        return min(psnr_from_mse(float(e)) for e in error.reshape(-1))

    def should_stop(self) -> bool:
        c = self.config
        if self.step_count >= c.steps:
            return True
        if c.max_seconds and self._tick is not None:
            # Host time without a device sync: at most a few queued steps ahead of the device.
            if self.seconds + time.perf_counter() - self._tick >= c.max_seconds:
                self.deadline.cut(f"fitting stopped after {self.step_count:,} of {c.steps:,} steps")
                return True
        if self.step_count and self.deadline.bounded and self.deadline.out_of_time(self.keep_seconds()):
            self.deadline.cut(f"fitting stopped after {self.step_count:,} of {c.steps:,} steps, leaving time for "
                              "the final evaluation and writing")
            return True
        return bool(c.target_psnr) and self.last_psnr >= c.target_psnr

    after_share = 1 / 2
    """What follows the fit costs per final point, as a share of a step's time per point (the reserve adds half
    again). A forward pass has a third of a step's arithmetic, but over a whole signal in large chunks it ran at
    0.65 of a step's time per point on 2 CPU cores: DIV2K 0882 (2.8 M pixels, a SIREN of 199k parameters) took
    18.1 s after steps of 4,096 points in 41 ms. With a third, `--max-seconds 30` on that photo ended at 31.2 s;
    with two thirds, the reserve (28 s) left no time to fit."""

    whole_share = 0.5
    """The share of the command's limit up to which the final evaluation (estimated from a step) is kept whole:
    the fit then stops early enough to leave it and its margin. A larger one takes a part of the samples
    (`final_samples`), and the fit keeps `final_share` of the limit for it and the writing. DIV2K 0882 (2.8 M
    pixels, the default SIREN, 2 loaded CPU cores; its evaluation estimated at 18 s): under `--max-seconds 40`,
    8 s of fitting and the whole reconstruction in 43 s; under 30, 16 s of fitting and a PSNR on 1.1 M samples
    in 29 s."""

    final_share = 0.4
    """Most of the command's limit the fit keeps for what follows it when the final evaluation cannot be whole
    (`whole_share`), rather than being stopped for it. Kept whole, a 600-frame 512² video's evaluation (26 min
    estimated on 2 CPU cores) stopped its fit after 2 steps under the CPU's 120 s and then ran 20 minutes past
    the limit; now it fits about 1,000 steps and ends in 103-107 s. A mesh's grid shrinks to the time left instead
    (`fit.occupancy.grid_within`, where `whole_share` is 0): keeping a default 256³ grid's time (220 s for the
    default SIREN) stopped the bunny's fit after 2 steps (IoU 0.45)."""

    def evaluation_seconds(self, samples: int) -> float:
        """Estimated seconds of evaluating the field at `samples` points after the fit, from a step's time per
        point (`after_share`)."""
        points = max(1, points_per_step(self.config, self.num_points))
        return self.step_seconds * samples / points * self.after_share

    def keep_seconds(self) -> float:
        """Seconds of the command's limit that the next step and what follows the fit need: the final
        evaluation, estimated from a step (`after_share`), and a share of the limit for writing; at most
        `final_share` of the limit beside the step where the evaluation cannot be whole (`whole_share`)."""
        final = self.num_points if self.final_points is None else self.final_points
        evaluation = self.evaluation_seconds(final)
        keep = self.step_seconds + self.deadline.reserve(after=evaluation)
        if self.deadline.bounded and evaluation > self.whole_share * self.deadline.seconds:
            keep = min(keep, self.step_seconds + self.final_share * self.deadline.seconds)
        return keep

    def final_samples(self, total: int) -> int:
        """How many of the signal's `total` samples the final evaluation takes: all of them, or under a limit
        whose time left they would need most of (over 80%, estimated from a step), as many as 40% of it
        evaluates by that estimate (at least `FINAL_MIN_SAMPLES`): on 2 CPU cores a large evaluation ran up to
        1.5× its estimate, and the rest is the writing's (with 60%, the video's command ended at 126 s of 120)."""
        if not self.deadline.bounded or not self.step_seconds:
            return total
        need, left = self.evaluation_seconds(total), self.deadline.left()
        if need <= 0.8 * left:
            return total
        return min(total, max(FINAL_MIN_SAMPLES, int(total * 0.4 * max(left, 0.0) / need)))


def autocast_for(precision: str, device: torch.device, *, cache: bool = True):
    """The forward pass's context for `precision`: bf16 or fp16 autocast on `device`, or nothing (fp32, tf32).
    cache=False: autocast casts a weight again at each use (what a CUDA graph's capture needs)."""
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16,
                              cache_enabled=cache)
    return contextlib.nullcontext()


@contextlib.contextmanager
def matmul_precision(precision: str):
    """The float32 matmul precision of `--precision` (tf32: "high", else "highest") inside the block, for
    every loop that steps (fit's, the engines', train's and train-sdf's)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


@dataclasses.dataclass
class FitResult:
    field: nn.Module
    config: FieldConfig
    metrics: dict
    prediction: torch.Tensor | None
    """The reconstruction, (*shape, c), in the field range; None where a time limit left the final evaluation
    a part of the samples (`Fitter.final_samples`)."""


REFRESH_SECONDS = 0.5
"""A fit's bar is redrawn at least this often (every step that ends after it)."""


class RunLog:
    """JSON-lines log, optional TensorBoard, optional progress bar."""

    def __init__(self, log_path: Path | None, tensorboard_dir: Path | None, progress: bool, total: int):
        self.log_path = log_path
        self.file = open(log_path, "a") if log_path else None
        self.writer = None
        if tensorboard_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from fieldlab._errors import missing_extra

                raise missing_extra("tensorboard", "tensorboard") from None
            self.writer = SummaryWriter(str(tensorboard_dir))
        self.bar, self.total, self.last_step = None, total, 0
        self._began = self._since = time.perf_counter()
        self._shown, self._first = 0.0, None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, leave=False)

    def advance(self, step: int, keep: float = 0.0, deadline: _deadline.Deadline | None = None) -> None:
        """Every step: the bar moves at least once a second (not only at log lines), and its total (so its
        ETA) is the steps that the command's --max-seconds leaves room for when that binds first (`keep`:
        the seconds that must follow the fit)."""
        self.last_step = step
        now = time.perf_counter()
        if self._first is None:
            self._first, self._since = step, now
        if not self.bar or now - self._shown < REFRESH_SECONDS:
            return
        self._shown = now
        deadline = deadline or _deadline.active()
        if deadline.bounded and step > self._first:
            per_step = (now - self._since) / (step - self._first)
            reachable = step + int(max(0.0, deadline.left() - keep) / per_step) + 1
            total = min(self.total, reachable)
            if total != self.bar.total:
                self.bar.total = total
        self.bar.update(step - self.bar.n)

    def record(self, step: int, lr: float, seconds: float, **scalars: float) -> None:
        """One log line of `scalars` (loss, psnr, bce, …); the bar shows all but the loss when there are others."""
        if self.file:
            self.file.write(_json.dumps({"step": step, **scalars, "lr": lr, "seconds": round(seconds, 4)}) + "\n")
            self.file.flush()
        if self.writer:
            for name, value in {**scalars, "lr": lr}.items():
                self.writer.add_scalar(name, value, step)
        self.last_step = step
        if self.bar:
            shown = {k: v for k, v in scalars.items() if k != "loss"} or scalars
            if step > self.bar.total:  # a total shortened by the time limit is never passed
                self.bar.total = step
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})

    def scalar(self, name: str, value: float, step: int) -> None:
        """A TensorBoard scalar only (one that costs an evaluation, so log.jsonl does without it)."""
        if self.writer:
            self.writer.add_scalar(name, value, step)

    def image(self, name: str, image: torch.Tensor, step: int) -> None:
        if self.writer:
            self.writer.add_image(name, ((image.clamp(-1, 1) + 1) / 2).cpu(), step, dataformats="HWC")

    def close(self) -> None:
        for closable in (self.file, self.writer, self.bar):
            if closable:
                closable.close()
        seconds = time.perf_counter() - self._began
        if self.bar is None and self.last_step and seconds >= QUIET_AFTER:  # --quiet: one line for the phase
            first = self._first or 1  # a resumed fit's first step here is past 1: count only this run's steps
            since = f" (steps {first:,} to {self.last_step:,})" if first > 1 else ""
            logger.info("fitting: %s step(s) in %.1f s%s", f"{self.last_step - first + 1:,}", seconds, since)


def own_trainer(config: FieldConfig, name: str, standard, precision: str = "fp32"):
    """The function `name` ("fit" or "fit_mesh") of the field's own engine when one is registered for it
    (MINER grows its pyramid block by block; `fit.own_engines`), else `standard`. `precision`: the fit's,
    refused in one line where the engine does not run it."""
    engine = engine_for(config)
    if engine is None:
        return standard
    if precision not in engine.precisions:
        raise UserError(f"--precision {precision} is not supported for {config.name}; use "
                        f"{', '.join(engine.precisions[:-1])} or {engine.precisions[-1]}")
    function = engine.fit if name == "fit" else engine.fit_mesh
    if function is None:
        raise UserError(f"field {config.name!r} cannot be fitted to this kind of input (its trainer has no {name})")
    return function


def diverged(step: int, what: str, lr: float) -> UserError:
    """The one line for a fit whose loss or weights went NaN or infinite: it stops, and nothing is written."""
    return UserError(f"the fit diverged at step {step:,} ({what}); no field was written. Try a lower --lr "
                     f"(this fit's peak was {lr:g}) or smaller frequency options (--omega0, --first-omega0, --sigma)")


def evenly_spread(total: int, samples: int, seed: int) -> torch.Tensor:
    """`samples` (≤ `total`) flat indices of the signal's samples at an even stride, from an offset seeded by
    `seed` (a partial final evaluation's samples, `Fitter.final_samples`)."""
    stride = total // samples
    offset = int(torch.randint(stride, (1,), generator=torch.Generator().manual_seed(seed)))
    return torch.arange(offset, total, stride)[:samples]


FINAL_MIN_SAMPLES = 2**16
"""Fewest samples a final evaluation cut by a time limit takes (`Fitter.final_samples`): enough for a PSNR to
about 0.01 dB."""

CHECKPOINT_SECONDS = 60.0
"""Fitting time between two checkpoints of a fit that keeps them."""


def fit(signal: Signal, config: FieldConfig, fit_config: FitConfig = FitConfig(), *, log_path: Path | None = None,
        tensorboard_dir: Path | None = None, progress: bool = False, checkpoint: Path | None = None,
        resume: bool = False, identity: str = "", train: object | None = None) -> FitResult:
    """Build a field from `config` (seeded) and fit it to `signal`.

    Returns the trained field (on the CPU), the metrics on the whole signal and the reconstruction. The
    steps are the fused Triton kernel's where `fit_config.kernel` takes it (`single_kernel`); `metrics`
    says which path ran (`kernel`).

    `checkpoint`: a file where the reference path saves its state (field, Adam, schedule, sampling
    generator, time and log so far) every `CHECKPOINT_SECONDS` of fitting (not at an interrupt, which may
    fall inside an update). With `resume`, a checkpoint there with the same `identity` (the run's options)
    is continued, so the resumed fit ends as the uninterrupted one would have. Fields with their own
    trainer (MINER) keep theirs; the fused kernel, which holds Adam's state itself, keeps none. `train`: the
    options of a field's own engine (`OwnEngine.options`), passed to it.
    """
    if engine_for(config) is not None:  # it keeps its own checkpoint (`fit.checkpoint`'s format) in `checkpoint`
        trainer = own_trainer(config, "fit", None, fit_config.precision)
        return trainer(signal, config, fit_config, log_path=log_path, tensorboard_dir=tensorboard_dir,
                       progress=progress, checkpoint=checkpoint, resume=resume, identity=identity,
                       **({"train": train} if train is not None else {}))
    fit_config.validate()
    if (config.in_dim, config.out_dim) != (signal.info.in_dim, signal.info.channels):
        info = signal.info
        raise UserError(f"the signal ({info.kind}) has {info.in_dim} coordinates and {info.channels} "
                        f"channel{'s' if info.channels != 1 else ''}, so its field needs in_dim {info.in_dim} and "
                        f"out_dim {info.channels}, got {config.in_dim} and {config.out_dim}")
    torch.manual_seed(fit_config.seed)
    field = config.build()
    lr = fit_config.lr or type(config).lr
    grid = coords = signal.coords()
    values = signal.flat_values()
    # A field may train on other points than it renders (partitions fitting their neighbours' margins).
    if isinstance(field, TrainsOnOwnPoints):
        coords, values = field.training_points(coords, values, signal.shape)
    device = resolve_device(fit_config.device)
    # an unset batch is the device's, here where the field's memory per point is known (the Fitter keeps it)
    fit_config = resolve_batch(fit_config, device, coords.shape[-2], config.num_params(), fit_bytes=config.fit_bytes)
    points = points_per_step(fit_config, coords.shape[-2])
    spec = single_kernel(config, fit_config, device, points, coords.shape[-2])
    if spec is not None:
        from fieldlab.kernels import describe

        logger.info("steps by %s, %s points per step",
                    describe(config, device, "fused", fit_config.precision, single=True),
                    f"{points:,}")
    fitter = Fitter(field, coords, values, fit_config, lr=lr,
                    betas=type(config).adam_betas, eps=type(config).adam_eps, fused_spec=spec)
    keeps = checkpoint is not None and fitter.kernel == "reference"
    if resume and not keeps:
        raise UserError("--resume: fits by the fused kernel keep no checkpoint (--kernel reference keeps them)")
    state = read_checkpoint(checkpoint, identity) if resume else None  # checked before the progress bar
    log = RunLog(log_path, tensorboard_dir, progress, fit_config.steps)
    every = fit_config.log_every
    saves = FitterCheckpoints(checkpoint if keeps else None, identity, state)
    saves.restore(fitter, log)
    try:
        while not fitter.should_stop():
            loss = fitter.step()
            step = fitter.step_count
            log.advance(step, fitter.keep_seconds(), fitter.deadline)
            if step % every == 0 or step == fit_config.steps:
                loss_value = float(loss)
                if not math.isfinite(loss_value):  # checked where the loss is read anyway: no extra sync
                    raise diverged(step, f"loss is {loss_value}", lr)
                if fit_config.target_psnr and psnr_from_mse(loss_value) >= fit_config.target_psnr:
                    # Confirm on the whole signal with the parameters the fit will write: a mini-batch's
                    # loss is noisy, and even a full batch's is the loss before the step, at the step's
                    # precision (a hash grid at bf16 on an H100 stopped at 40.56 dB by its loss with 39.94
                    # in metrics.json), so the stop and metrics.json now read the same PSNR.
                    fitter.last_psnr = fitter.full_psnr()
                log.record(step, fitter.last_lr, fitter.elapsed(), loss=loss_value,
                           psnr=round(psnr_from_mse(loss_value), 4))
                saves.maybe_save(fitter, log)  # after the log line, so a resumed log has it once
        seconds = fitter.elapsed()
        total = math.prod(signal.shape)
        samples = fitter.final_samples(total)
        if samples < total:  # the time left evaluates a part
            rows = evenly_spread(total, samples, fit_config.seed)
            need = _deadline.duration(fitter.evaluation_seconds(total))
            fitter.deadline.cut(f"the final evaluation took {samples:,} evenly spread of the {total:,} samples "
                                f"(all of them needed about {need}): the PSNR is theirs, and no "
                                "reconstruction, error picture or SSIM was made (`fieldlab render` draws the field "
                                "at any resolution)")
            prediction = fitter.predict(signal.coords_at(rows)).cpu()
        else:
            rows = None
            prediction = fitter.predict(grid).cpu()
        if not bool(torch.isfinite(prediction).all()):  # a fit stopped between two checks of the loss
            raise diverged(fitter.step_count, "the field's values are not finite", lr)
        image = None if rows is not None else prediction.reshape(*signal.shape, -1)
        if image is not None and get_modality(signal.info.kind).log_image:
            log.image("reconstruction", image, fitter.step_count)
    finally:
        log.close()
    if image is None:
        metrics = metrics_for(signal.info.kind, prediction, signal.flat_values()[rows], sampled=True)
        metrics["evaluated_samples"] = samples
    else:
        metrics = metrics_for(signal.info.kind, image, signal.values)
    metrics.update(params=config.num_params(), steps=fitter.step_count, seconds=round(seconds, 3),
                   compile_seconds=round(fitter.compile_seconds, 3), device=str(fitter.device),
                   precision=fit_config.precision, kernel=fitter.kernel, **fitter.deadline.report())
    return FitResult(field=fitter.field.cpu(), config=config, metrics=metrics, prediction=image)
