"""The fitting loop's options."""

from __future__ import annotations

import dataclasses
import numbers
from typing import TYPE_CHECKING, Literal

from fieldlab import _validate as v
from fieldlab._errors import UserError

if TYPE_CHECKING:
    import torch

    from fieldlab.fields import FieldConfig
    from fieldlab.kernels import FusedSpec

MAX_STEPS = 10**8
MAX_SECONDS = 10**8
"""Over three years of fitting: a larger --max-seconds is a typo, not a plan."""


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """How to fit one field to one signal."""

    steps: int = 2000
    """Adam steps (the learning-rate schedule spans them)."""
    lr: float | None = None
    """Peak learning rate; None takes the architecture's tuned default."""
    lr_final: float = 0.1
    """Learning rate at the last step, as a fraction of `lr` (exponential decay)."""
    warmup: int = 0
    """Steps of linear learning-rate warm-up."""
    batch_size: int | None = None
    """Random coordinates per step; 0 uses every sample (full batch); unset: every sample on a GPU, and on a
    CPU mini-batches where a full step would be slow (`fit.device_defaults`)."""
    sample_fraction: float = 0.0
    """Random fraction of the samples per step (for videos and volumes); 0 defers to `batch_size`."""
    max_seconds: float | None = None
    """Stop after this many seconds of fitting; 0 means no time limit; unset: none on a GPU, 120 on a CPU
    (`fit.device_defaults`)."""
    target_psnr: float = 0.0
    """Stop once the PSNR on the full signal reaches this many dB; 0 means no target."""
    seed: int = 0
    """Seed of the initialisation and the mini-batches."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    precision: Literal["fp32", "tf32", "bf16", "fp16"] = "fp32"
    """fp32; tf32 matrix units; bf16 autocast (fastest; caps PSNR near 50 dB); or fp16 autocast with a
    dynamic loss scale (as fast as bf16 on tensor cores, 8× finer rounding; the reference path only, not
    MINER)."""
    compile: bool = False
    """Compile the field's forward and backward with torch.compile."""
    kernel: Literal["auto", "fused", "reference"] = "auto"
    """auto: the fused Triton kernel on CUDA for SIREN, Gaussian and Fourier-feature MLPs up to 64 wide on
    large signals (`AUTO_MIN_POINTS` points per step), the reference path (autograd and fieldlab's Adam)
    elsewhere; fused or reference force one (MINER's sine blocks: auto takes the kernel at every precision,
    `fit.miner`)."""
    log_every: int = 10
    """Write a log line (and refresh the progress bar) every this many steps."""
    eval_chunk: int = 2**18
    """Points per chunk when evaluating the whole signal."""

    def validate(self) -> None:
        """Every option typed and within a range that a fit can use: one UserError naming the flag."""
        for name in ("steps", "warmup", "batch_size", "seed", "log_every", "eval_chunk"):
            value = getattr(self, name)  # 2.0 steps is a typo that range() would fail on later
            if value is None and name == "batch_size":  # unset: the device's default
                continue
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise UserError(f"--{name.replace('_', '-')} must be a whole number, got {value!r}")
        v.bounded_int(self.steps, "--steps", 1, MAX_STEPS)
        v.bounded_int(self.warmup, "--warmup", 0, MAX_STEPS)
        v.bounded_int(self.batch_size or 0, "--batch-size", 0, v.LIMITS.samples)
        v.bounded_int(self.seed, "--seed", 0, v.LIMITS.seed)
        v.bounded_int(self.log_every, "--log-every", 1, MAX_STEPS)
        v.bounded_int(self.eval_chunk, "--eval-chunk", 1, 2**31)
        if self.lr is not None and not 0 < v.bounded_float(self.lr, "--lr", 0, 10) < 10:
            raise UserError(f"--lr must be in (0, 10), got {self.lr}")
        if not 0 < v.bounded_float(self.lr_final, "--lr-final", 0, 1):
            raise UserError(f"--lr-final must be in (0, 1], got {self.lr_final}")
        v.bounded_float(self.sample_fraction, "--sample-fraction", 0, 1)
        if self.batch_size and self.sample_fraction:
            raise UserError("--batch-size and --sample-fraction choose the same thing: give one")
        v.bounded_float(self.max_seconds or 0.0, "--max-seconds", 0, MAX_SECONDS)
        v.bounded_float(self.target_psnr, "--target-psnr", 0, 200)
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be fp32, tf32, bf16 or fp16, got {self.precision!r}")
        if self.kernel not in ("auto", "fused", "reference"):
            raise UserError(f"--kernel must be auto, fused or reference, got {self.kernel!r}")


PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
"""What `--precision` of one field's fit takes (datasets of fields: fp32, tf32 or bf16)."""


AUTO_MIN_POINTS = 16_384
"""`--kernel auto` fits one field with the fused kernel only from this many points per step; fewer take
the reference path. Measured on an H100 (benchmarks/fit_single.py, SIREN 3×64 bf16, BENCHMARKS.md): the
kernel is 15.9× the reference at 16,384 points, 7.1× at 65,536, 10× at 262,144; smaller signals were
not measured, and fit in a fraction of a second either way."""


def points_per_step(config: FitConfig, n: int) -> int:
    """How many of `n` points one step of a single fit uses (`batch_size`, `sample_fraction` or all)."""
    size = config.batch_size or round(config.sample_fraction * n)
    return n if not size or size >= n else size


def single_kernel(config: FieldConfig, fit_config: FitConfig, device: torch.device, points: int,
                  total: int | None = None) -> FusedSpec | None:
    """The fused kernel's `FusedSpec` to fit one field of `config` on `device` with `points` points per
    step of its `total` training points, or None for the reference path. `fit_config.kernel`: auto takes the
    kernel on CUDA for the fields and widths it covers (see `kernels.choose_kernel`; a partitioned field's for
    full-batch steps only), from AUTO_MIN_POINTS points per step and without `compile`; fused forces it (a clear
    `UserError` where it cannot run); reference never takes it."""
    from fieldlab.kernels import choose_kernel

    spec = choose_kernel(config, device, fit_config.kernel, fit_config.precision, single=True,
                         full_batch=total is not None and points >= total)
    if spec is None:
        return None
    if fit_config.kernel == "fused":
        if fit_config.compile:
            raise UserError("--compile compiles the reference path; drop it or use --kernel reference")
        return spec
    return spec if not fit_config.compile and points >= AUTO_MIN_POINTS else None
