"""Independent batched fitting: f fields of one architecture fitted at once through `FieldStack`.

One Adam over the stacked parameters on the sum of per-field mean squared errors: Adam is elementwise and
the loss separates, so every field follows the path it would follow alone (fit-a-nef's recipe). What makes
a field's result depend on nothing but (seed, row): its initialisation (`init="shared"`: one draw from
`seed` for all; `"random"`: a draw seeded by (seed, row)) and its random pixel subsets, which come from a
counter-based hash of (seed, row, step, pixel) rather than a generator shared by the batch. Fields that
reach their target keep the parameters they had at that check and leave the batch (the stack shrinks). The
target is the items' modality's `StopMeasure`: PSNR (`target_psnr`), for occupancy grids (a mesh folder's
±1 items) the share of samples whose sign is right (`target_accuracy`), since their PSNR stays low however
right the inside is, and for sounds their SNR (`target_snr`), since PSNR reads a quiet clip's loud error as small.

Shapes: f fields, n points, d coordinate dims, c channels, k points per step.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Literal

import numpy as np
import torch

from fieldlab import _validate as v
from fieldlab._errors import UserError
from fieldlab.fields import FieldConfig, FieldStack
from fieldlab.fit.config import FitConfig
from fieldlab.fit.device_defaults import dataset_sample_fraction
from fieldlab.fit.engine import FusedEngine, StackEngine
from fieldlab.fit.own_engines import ByConfigClass
from fieldlab.fit.loop import matmul_precision, resolve_device
from fieldlab.fit.metrics import field_psnrs, field_sign_accuracies, field_snrs
from fieldlab.fit.points import distinct_subset, subset_size
from fieldlab.fit.schedule import Schedule

GRAPH_STEPS = 50
"""Steps per CUDA graph of the fused path when no PSNR checks cut the run into segments."""

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
    target_accuracy: float = 0.995
    """An occupancy field (a mesh folder's items, ±1) stops once this share of its samples has the right sign
    (checked every `check_every` steps, in place of `target_psnr`); 0 means no target. At 99.5 % of a 32³
    grid the errors are a thin shell of cells at the surface (BENCHMARKS.md, occupancy stopping rule)."""
    target_snr: float = 30.0
    """A sound (a folder of clips' items) stops once its SNR reaches this many dB (checked every `check_every`
    steps, in place of `target_psnr`); 0 means no target. PSNR counts the error against the full range [-1, 1],
    so a quiet clip reached 40 dB PSNR (and stopped) with an error 36-39 dB louder than itself."""
    check_every: int = 50
    """Measure every field's quality this often (for `target_psnr`, `target_snr` or `target_accuracy`)."""
    sample_fraction: float | None = None
    """Random fraction of each signal's samples per step; 0 uses every sample; unset: every sample on a GPU, and
    on a CPU every sample unless one step of a chunk's fields would exceed the CPU's step budget, then a subset
    within it (`fit.device_defaults`: 16 photos of 512² with SIREN 2×32 take 32,768 of their 262,144 samples;
    items of 64² and less take every sample)."""
    seed: int = 0
    """Seed of the initialisation and the pixel subsets."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    """The steps' arithmetic: fp32; tf32 matrix units; or bf16 (autocast on the reference path, bf16
    operands with fp32 results in the kernel). PSNR is measured in fp32 at every precision: it is the
    quality of the stored field as it renders (at 60 dB a bf16 forward pass alone costs 0.3 dB)."""
    compile: bool = False
    """Compile the forward and loss with torch.compile (reference path only)."""
    cuda_graphs: bool = True
    """Replay the fused kernel's steps between checks as CUDA graphs (full-batch fits of small batches on
    CUDA: fewer fields than 4 per multiprocessor, where a step is too short to hide its launch), so a step
    costs no Python or launch time; off runs every step as its own launch (same results)."""
    kernel: Literal["auto", "fused", "reference"] = "auto"
    """auto: the fused Triton kernel on CUDA where it covers the field and pays (SIREN, Gaussian, or ReLU on
    Fourier features, MLPs up to 64 wide, 32 at fp32, and 4 layers), the reference path (FieldStack)
    elsewhere; fused (up to 128 wide, above 64 at bf16 only) or reference force one."""
    max_seconds: float = 0.0
    """Time limit for the whole command, in seconds (0: none): no chunk is begun that would not finish
    within it (estimated from the chunks so far), and a chunk begun stops one step's time before it and is
    not written, so the store is left incomplete and `--resume` fits the rest."""

    def validate(self) -> None:
        # The options shared with a single fit are checked by FitConfig, so both commands agree.
        FitConfig(steps=self.steps, lr=self.lr, lr_final=self.lr_final, target_psnr=self.target_psnr,
                  sample_fraction=self.sample_fraction or 0.0, precision=self.precision, kernel=self.kernel,
                  max_seconds=self.max_seconds).validate()
        v.bounded_float(self.target_accuracy, "--target-accuracy", 0, 1)
        v.bounded_float(self.target_snr, "--target-snr", 0, 1000)
        if self.precision == "fp16":  # FitConfig takes it, but only the single fit's loop keeps a loss scale
            raise UserError("--precision fp16 fits one field only; fit-dataset runs fp32, tf32 or bf16")
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
    kernel: str = "reference"
    """Which path did the steps: fused (the Triton kernel) or reference (FieldStack)."""
    quality: np.ndarray | None = None
    """Each field's stopping measure (`measure`) where it stopped; its PSNR where that is the measure."""
    measure: str = "psnr"


@dataclasses.dataclass(frozen=True)
class StopMeasure:
    """What `fit_batch` checks a field's fit by: a per-field quality (higher is better) and its target."""

    name: str
    """Its name in logs and results (`BatchResult.measure`)."""
    measure: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    """(prediction, target), both (f, n, c) → (f,) on the device."""
    target: Callable[[BatchedFitConfig], float]
    """The option that holds its target (0: no target)."""


PSNR = StopMeasure("psnr", lambda p, t: field_psnrs((p - t).square().mean(dim=(1, 2))), lambda fit: fit.target_psnr)
SIGN_ACCURACY = StopMeasure("sign_accuracy", field_sign_accuracies, lambda fit: fit.target_accuracy)
SNR = StopMeasure("snr", field_snrs, lambda fit: fit.target_snr)


def stop_measure(kind: str) -> StopMeasure:
    """The measure fields of items of modality `kind` stop by: occupancy grids (±1) the share of samples
    whose sign is right, modalities that report an SNR (sounds) their SNR, every other modality PSNR."""
    from fieldlab.signals import get_modality

    modality = get_modality(kind)
    return SIGN_ACCURACY if modality.occupancy else SNR if "snr" in modality.metrics else PSNR


def row_seed(seed: int, row: int) -> int:
    """A 63-bit seed that depends on (seed, row) alone."""
    return int(np.random.SeedSequence([seed, row]).generate_state(2, np.uint32).astype(np.uint64) @ [1 << 31, 1])


def init_params(config: FieldConfig, rows, init: str, seed: int,
                device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict, dict]:
    """(template, stacked parameters, stacked buffers) of the fields of `rows` at initialisation, on `device`:
    the modules are made on the CPU (the same values on every device), and a shared one is copied there before
    it is repeated, so that a batch's weights are not made on the host and then moved (143 MB for 4,096 SIRENs
    of 3×64)."""
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
    params = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in modules]).to(device)
              .expand(f, *v.shape).clone() for k, v in modules[0].named_parameters()}
    buffers = {k: torch.stack([dict(m.named_buffers())[k] for m in modules]).to(device).expand(f, *v.shape).clone()
               for k, v in modules[0].named_buffers()}
    return modules[0], params, buffers


def fit_batch(config: FieldConfig, coords: torch.Tensor, values: torch.Tensor, rows, fit: BatchedFitConfig,
              *, progress=None, measure: StopMeasure = PSNR) -> BatchResult:
    """Fit one field per signal: `coords` (n, d) shared, `values` (f, n, c) in [-1, 1], `rows` (f,) the
    fields' global ids (they seed what is random). `progress(step, active)` is called every check (every
    GRAPH_STEPS steps without a target; it may raise to stop the batch); a field leaves once `measure` reaches
    its target (`stop_measure(kind)` of the items' modality).

    The fused kernel does the steps where it covers the field and device (`fit.kernel`), the reference
    path (`FieldStack`) elsewhere; `BatchResult.kernel` says which ran.
    """
    from fieldlab.kernels import choose_kernel

    fit.validate()
    device = resolve_device(fit.device)
    f, n, c = values.shape
    rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device)
    template, params, buffers = init_params(config, np.asarray(rows), fit.init, fit.seed, device)
    coords, values = coords.to(device), values.to(device)
    lr = fit.lr or config.lr
    lrs = Schedule(lr, fit.steps, "exponential", final=fit.lr_final).lrs()
    spec = choose_kernel(config, device, fit.kernel, fit.precision)
    fraction = fit.sample_fraction
    if fraction is None:  # the device's choice for this batch (fit-dataset resolves it once, for every chunk)
        fraction = dataset_sample_fraction(device, n, f, config.num_params())
    k = subset_size(fraction, n)

    def points(step: int, active: torch.Tensor) -> torch.Tensor:
        return distinct_subset(rows_t[active], step, n, k, fit.seed)

    options = dict(betas=config.adam_betas, eps=config.adam_eps, precision=fit.precision,
                   points=points if k < n else None)
    if spec is not None:
        engine = FusedEngine(spec, params, buffers, coords, values, lrs, cuda_graphs=fit.cuda_graphs,
                             **options)
    else:
        engine = StackEngine(FieldStack(template, params, buffers), coords, values, lrs,
                             compile=fit.compile, **options)
    # Finished fields are gathered on the device and the batch comes to the host once, at the end.
    out = {name: torch.empty_like(v) for name, v in params.items()}
    psnr, quality = np.full(f, np.nan), np.full(f, np.nan)
    done_steps = np.zeros(f, dtype=np.int64)
    target = measure.target(fit)

    def check() -> tuple[torch.Tensor, torch.Tensor]:
        """(the stopping measure, PSNR) of the fields still fitting, from one prediction."""
        prediction, expected = engine.predict(coords), values[engine.active]
        psnrs = PSNR.measure(prediction, expected)
        return (psnrs if measure is PSNR else measure.measure(prediction, expected)), psnrs

    def record(positions: torch.Tensor, where: torch.Tensor, measured: tuple[torch.Tensor, torch.Tensor],
               step: int) -> None:
        state = engine.parameters()
        for name in state:
            out[name][positions] = state[name][where].float()
        index = positions.cpu()
        quality[index.numpy()] = measured[0][where].cpu().numpy()
        psnr[index.numpy()] = measured[1][where].cpu().numpy()
        done_steps[index.numpy()] = step

    def result(times) -> BatchResult:
        refuse_diverged(out, psnr, rows, lr)  # where the weights are (a GPU checks 143 MB at once)
        host = {name: v.cpu() for name, v in out.items()}
        host.update({name: v.float().cpu() for name, v in buffers.items()})  # fixed per field (e.g. random features)
        return BatchResult(host, psnr, done_steps, *times, kernel=engine.name, quality=quality, measure=measure.name)

    # Steps run in segments that end at the PSNR checks (or every GRAPH_STEPS steps): a fused segment is one
    # CUDA graph. The first step runs alone, so compilation stays out of the others' time.
    segment = fit.check_every if target else GRAPH_STEPS
    timer = _Timer(device)
    with matmul_precision(fit.precision):
        step = 0
        while step < fit.steps:
            end = 1 if step == 0 else min(fit.steps, (step // segment + 1) * segment)
            began = time.perf_counter()
            engine.run(step, end)
            if step == 0:
                timer.lap()
                if progress and device.type == "cpu":  # steps of large items take seconds there: shorter segments
                    segment = _reporting_segment(segment, time.perf_counter() - began)
            step = end
            if target and step % fit.check_every == 0 and step < fit.steps:
                measured = check()
                reached = measured[0] >= target
                if bool(reached.any()):
                    where = reached.nonzero()[:, 0]
                    record(engine.active[where], where, measured, step)
                    keep = (~reached).nonzero()[:, 0]
                    if len(keep) == 0:
                        return result(timer.done())
                    engine.select(keep)
            if progress and step < fit.steps:  # every check, or every GRAPH_STEPS without a target
                progress(step, len(engine.active))
        times = timer.done()
        active = engine.active
        record(active, torch.arange(len(active), device=device), check(), fit.steps)
    return result(times)


def _reporting_segment(segment: int, step_seconds: float) -> int:
    """The longest divisor of `segment` (so that checks still fall on its ends) whose steps take at most about a
    second at `step_seconds` each: `progress` (a bar, a time limit) hears from the batch that often."""
    return max(d for d in range(1, segment + 1) if segment % d == 0 and (d == 1 or d * step_seconds <= 1.0))


def refuse_diverged(params: dict[str, torch.Tensor], psnr: np.ndarray, rows, lr: float) -> None:
    """One line naming the rows whose fields went NaN or infinite, before any of the batch is stored: the
    others of the batch are fine, but a store holds a batch whole or not at all."""
    f = len(psnr)
    bad = ~np.isfinite(psnr)
    for tensor in params.values():
        bad |= ~torch.isfinite(tensor.reshape(f, -1)).all(dim=1).cpu().numpy()
    if bad.any():
        names = ", ".join(str(int(r)) for r in np.asarray(rows)[bad][:10]) + (", …" if bad.sum() > 10 else "")
        raise UserError(f"the fits of {int(bad.sum())} of {f} fields diverged (rows {names}: their weights are not "
                        f"finite); nothing of this batch was stored. Try a lower --lr (this one's was {lr:g}) or "
                        "smaller frequency options (--omega0, --sigma)")


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

    kind = "image"
    """The items' modality, which chooses the measure fields stop by (`stop_measure`); the job sets it."""
    steps_of_fit = True
    """Whether `fit` steps a batch `fit_config.steps` times, calling its `progress(step, active)` as it goes."""

    def __init__(self, config: FieldConfig, fit: BatchedFitConfig):
        self.config, self.fit_config = config, fit

    def prepare(self, rows, values_of, coords: torch.Tensor, checkpoint=None, progress: bool = False) -> bool:
        """Learn what the fields share from the dataset (`values_of(rows)` → (f, n, c)); nothing here. A
        fitter that learns for long keeps `checkpoint` (`fit.meta.PrepareCheckpoint`), returns False where the
        time limit stopped it before the end, and shows a bar with `progress` (else log lines)."""
        return True

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
        return fit_batch(self.config, coords, values, rows, self.fit_config, progress=progress,
                         measure=stop_measure(self.kind))

    def describe(self) -> str:
        """Which path fits the fields, for the log."""
        from fieldlab.kernels import describe

        return describe(self.config, resolve_device(self.fit_config.device), self.fit_config.kernel,
                        self.fit_config.precision)


_DATASET_FITTERS: ByConfigClass[type[DatasetFitter]] = ByConfigClass("dataset fitter")


def register_dataset_fitter(config_class: type[FieldConfig], fitter: type[DatasetFitter]) -> None:
    """Use `fitter` for datasets of fields of `config_class` (and its subclasses; a duplicate raises)."""
    _DATASET_FITTERS.register(config_class, fitter)


def dataset_fitter(config: FieldConfig, fit: BatchedFitConfig) -> DatasetFitter:
    return (_DATASET_FITTERS.get(config) or DatasetFitter)(config, fit)
