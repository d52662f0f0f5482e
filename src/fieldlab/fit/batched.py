"""Independent batched fitting: f fields of one architecture fitted at once through `FieldStack`.

One Adam over the stacked parameters on the sum of per-field mean squared errors: Adam is elementwise and
the loss separates, so every field follows the path it would follow alone (fit-a-nef's recipe). What makes
a field's result depend on nothing but (seed, row): its initialisation (`init="shared"`: one draw from
`seed` for all; `"random"`: a draw seeded by (seed, row)) and its random pixel subsets, which come from a
counter-based hash of (seed, row, step, pixel) rather than a generator shared by the batch. Fields that
reach `target_psnr` keep the parameters they had at that check and leave the batch (the stack shrinks).

Shapes: f fields, n points, d coordinate dims, c channels, k points per step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Literal

import numpy as np
import torch

from fieldlab._errors import UserError
from fieldlab.fields import FieldConfig, FieldStack
from fieldlab.fit.config import FitConfig
from fieldlab.fit.loop import _matmul_precision, resolve_device

# Defaults for datasets of small signals (fit-a-nef's benchmark SIREN): a field per datum stays small.
DATASET_FIELD_DEFAULTS: dict[str, dict[str, Any]] = {"siren": {"hidden_dim": 32, "num_layers": 2}}


@dataclasses.dataclass(frozen=True)
class BatchedFitConfig:
    """How to fit a batch of fields (one per signal of a dataset)."""

    steps: int = 500
    """Adam steps per field (fewer when it reaches `target_psnr`)."""
    lr: float | None = None
    """Peak learning rate; None takes the architecture's tuned default."""
    lr_final: float = 1.0
    """Learning rate at the last step, as a fraction of `lr` (exponential decay). Constant by default: on
    32² patches a decay to 0.1 over 500 steps cost 3 dB (BENCHMARKS.md, fit-dataset)."""
    init: Literal["shared", "random"] = "shared"
    """shared: every field starts from one draw (helps downstream learning); random: a draw per field."""
    target_psnr: float = 40.0
    """A field stops once its PSNR on all its samples reaches this many dB (checked every `check_every`
    steps); 0 means no target. 40 dB is past what an 8-bit image shows, and saves the steps beyond it."""
    check_every: int = 50
    """Measure every field's PSNR this often (for `target_psnr`)."""
    sample_fraction: float = 0.0
    """Random fraction of each signal's samples per step; 0 uses every sample."""
    seed: int = 0
    """Seed of the initialisation and the pixel subsets."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    """fp32; tf32 matrix units; or bf16 autocast."""
    compile: bool = False
    """Compile the forward and loss with torch.compile."""

    def validate(self) -> None:
        # The options shared with a single fit are checked by FitConfig, so both commands agree.
        FitConfig(steps=self.steps, lr=self.lr, lr_final=self.lr_final, target_psnr=self.target_psnr,
                  sample_fraction=self.sample_fraction, precision=self.precision).validate()
        if self.init not in ("shared", "random"):
            raise UserError(f"--init must be shared or random, got {self.init!r}")
        if self.check_every < 1:
            raise UserError(f"--check-every must be positive, got {self.check_every}")


@dataclasses.dataclass
class BatchResult:
    """Fitted fields of one batch, on the CPU, in the order of the rows given."""

    params: dict[str, torch.Tensor]
    """Stacked per-field tensors {name: (f, *shape)}, named as in the module."""
    psnr: np.ndarray
    steps: np.ndarray
    seconds: float = 0.0
    """Wall time of the steps (device-synchronised), the first step included."""
    first_step_seconds: float = 0.0
    """Wall time of the first step alone (compilation, when `compile`)."""


def row_seed(seed: int, row: int) -> int:
    """A 63-bit seed that depends on (seed, row) alone."""
    return int(np.random.SeedSequence([seed, row]).generate_state(2, np.uint32).astype(np.uint64) @ [1 << 31, 1])


def init_params(config: FieldConfig, rows, init: str, seed: int) -> tuple[torch.nn.Module, dict, dict]:
    """(template, stacked parameters, stacked buffers) of the fields of `rows` at initialisation."""
    with torch.random.fork_rng(devices=[]):
        if init == "shared":
            torch.manual_seed(seed)
            one = config.build()
            modules = [one]
        else:
            modules = []
            for row in rows:
                torch.manual_seed(row_seed(seed, int(row)))
                modules.append(config.build())
    f = len(rows)
    params = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in modules]).expand(f, *v.shape).clone()
              for k, v in modules[0].named_parameters()}
    buffers = {k: torch.stack([dict(m.named_buffers())[k] for m in modules]).expand(f, *v.shape).clone()
               for k, v in modules[0].named_buffers()}
    return modules[0], params, buffers


def pixel_subset(rows: torch.Tensor, step: int, n: int, k: int, seed: int) -> torch.Tensor:
    """(f, k) distinct indices into n samples per field, from a hash of (seed, row, step, sample).

    A counter-based draw: the subset of a field does not depend on which other fields share its batch.
    """
    mask = 0xFFFFFFFF
    x = (rows[:, None] * 0x9E3779B1 + torch.arange(n, device=rows.device)[None] * 0x85EBCA77
         + ((step * 0xC2B2AE3D + seed * 0x27D4EB2F) & mask)) & mask
    for shift, multiplier in ((16, 0x7FEB352D), (15, 0x846CA68B)):  # an avalanching integer mix
        x = ((x ^ (x >> shift)) * multiplier) & mask
    x = x ^ (x >> 16)
    return x.topk(k, dim=1, largest=False).indices


def _select(stack: FieldStack, keep: torch.Tensor, optimizer: torch.optim.Adam, lr: float):
    """The fields `keep` of `stack` as a new stack, with their Adam moments carried over."""
    new = stack.select(keep)
    new_optimizer = torch.optim.Adam(new.parameters(), lr=lr, betas=optimizer.defaults["betas"],
                                     eps=optimizer.defaults["eps"], fused=optimizer.defaults.get("fused"))
    for old_p, new_p in zip(stack.state()[0].values(), new.state()[0].values()):
        state = optimizer.state.get(old_p)
        if state:
            new_optimizer.state[new_p] = {k: v[keep].clone() if k != "step" else v.clone() for k, v in state.items()}
    return new, new_optimizer


def fit_batch(config: FieldConfig, coords: torch.Tensor, values: torch.Tensor, rows, fit: BatchedFitConfig,
              *, progress=None) -> BatchResult:
    """Fit one field per signal: `coords` (n, d) shared, `values` (f, n, c) in [-1, 1], `rows` (f,) the
    fields' global ids (they seed what is random). `progress(step, active)` is called every check."""
    fit.validate()
    device = resolve_device(fit.device)
    f, n, c = values.shape
    rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device)
    template, params, buffers = init_params(config, np.asarray(rows), fit.init, fit.seed)
    stack = FieldStack(template, {k: v.to(device) for k, v in params.items()}, {k: v.to(device) for k, v in buffers.items()})
    coords, values = coords.to(device), values.to(device)
    lr = fit.lr or config.lr
    optimizer = torch.optim.Adam(stack.parameters(), lr=lr, betas=config.adam_betas, eps=config.adam_eps,
                                 fused=device.type == "cuda")
    decay = math.log(fit.lr_final) / fit.steps
    k = round(fit.sample_fraction * n) if fit.sample_fraction else n
    k = max(1, min(k, n))
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if fit.precision == "bf16" \
        else contextlib.nullcontext

    def loss_of(stack: FieldStack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast():
            prediction = stack(x)
        return (prediction.float() - y).square().mean(dim=(1, 2)).sum()

    loss_fn = torch.compile(loss_of) if fit.compile else loss_of
    active = torch.arange(f, device=device)  # positions (in the batch) of the fields still fitting
    out = {name: torch.empty_like(v, device="cpu") for name, v in params.items()}
    out.update({name: v.float() for name, v in buffers.items()})  # fixed per field (e.g. random features)
    psnr = np.full(f, np.nan)
    steps = np.zeros(f, dtype=np.int64)

    def measure() -> torch.Tensor:
        with torch.no_grad(), autocast():
            prediction = stack(coords.expand(len(active), n, -1))
        mse = (prediction.float() - values[active]).square().mean(dim=(1, 2)).double()
        return 10 * torch.log10(4.0 / mse.clamp_min(1e-30))

    def record(positions: torch.Tensor, where: torch.Tensor, quality: torch.Tensor, step: int) -> None:
        state = stack.state()[0]
        index = positions.cpu()
        for name in state:
            out[name][index] = state[name].detach()[where].float().cpu()
        psnr[index.numpy()] = quality.cpu().numpy()
        steps[index.numpy()] = step

    timer = _Timer(device)
    with _matmul_precision(fit.precision):
        for step in range(fit.steps):
            if step == 1:
                timer.lap()
            for group in optimizer.param_groups:
                group["lr"] = lr * math.exp(decay * step)
            if k < n:
                index = pixel_subset(rows_t[active], step, n, k, fit.seed)
                x, y = coords[index], values[active[:, None], index]
            else:
                x, y = coords.expand(len(active), n, -1), values[active]
            loss = loss_fn(stack, x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            last = step + 1 == fit.steps
            if fit.target_psnr and ((step + 1) % fit.check_every == 0) and not last:
                quality = measure()
                reached = quality >= fit.target_psnr
                if bool(reached.any()):
                    where = reached.nonzero()[:, 0]
                    record(active[where], where, quality[where], step + 1)
                    keep = (~reached).nonzero()[:, 0]
                    if len(keep) == 0:
                        return BatchResult(out, psnr, steps, *timer.done())
                    stack, optimizer = _select(stack, keep, optimizer, lr)
                    active = active[keep]
                if progress:
                    progress(step + 1, len(active))
        times = timer.done()
        record(active, torch.arange(len(active), device=device), measure(), fit.steps)
    return BatchResult(out, psnr, steps, *times)


class _Timer:
    """Device-synchronised wall time since creation, with the first lap kept apart."""

    def __init__(self, device: torch.device):
        import time

        self.clock, self.device = time.perf_counter, device
        self.start, self.first = self.clock(), None

    def _sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self.clock() - self.start

    def lap(self) -> None:
        self.first = self._sync()

    def done(self) -> tuple[float, float]:
        total = self._sync()
        return total, self.first if self.first is not None else total


class DatasetFitter:
    """Turns batches of signals into stored fields; `fit-dataset` drives one of these per run.

    The default fits every parameter of every field independently (`fit_batch`). A meta-learned family
    (functa) registers its own with `register_dataset_fitter`: `prepare` learns the shared network (on
    every rank; DDP inside), `shared()` is what the store keeps once, `per_field_shapes()` what it keeps
    per row, and `fit` returns the per-field tensors of a batch.
    """

    def __init__(self, config: FieldConfig, fit: BatchedFitConfig):
        self.config, self.fit_config = config, fit

    def prepare(self, rows, values_of, coords: torch.Tensor) -> None:
        """Learn what the fields share from the dataset (`values_of(rows)` → (f, n, c)); nothing here."""

    def load_shared(self, shared: dict[str, torch.Tensor]) -> None:
        """Take the shared tensors back from a store being resumed."""

    def shared(self) -> dict[str, torch.Tensor]:
        return {}

    def per_field_shapes(self) -> dict[str, tuple[int, ...]]:
        with torch.device("meta"):
            module = self.config.build()
        # Buffers too: a field's fixed random features are part of what it is.
        return {name: tuple(t.shape) for name, t in [*module.named_parameters(), *module.named_buffers()]}

    def fit(self, coords: torch.Tensor, values: torch.Tensor, rows, progress=None) -> BatchResult:
        return fit_batch(self.config, coords, values, rows, self.fit_config, progress=progress)


_DATASET_FITTERS: dict[str, type[DatasetFitter]] = {}


def register_dataset_fitter(field: str, fitter: type[DatasetFitter]) -> None:
    """Use `fitter` for datasets of field `field` (a duplicate name raises)."""
    if field in _DATASET_FITTERS:
        raise ValueError(f"a dataset fitter for {field!r} is already registered")
    _DATASET_FITTERS[field] = fitter


def dataset_fitter(config: FieldConfig, fit: BatchedFitConfig) -> DatasetFitter:
    return _DATASET_FITTERS.get(config.name, DatasetFitter)(config, fit)
