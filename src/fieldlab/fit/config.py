"""The fitting loop's options."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Literal

from fieldlab._errors import UserError


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
    batch_size: int = 0
    """Random coordinates per step; 0 uses every sample (full batch)."""
    sample_fraction: float = 0.0
    """Random fraction of the samples per step (for videos and volumes); 0 defers to `batch_size`."""
    max_seconds: float = 0.0
    """Stop after this many seconds of fitting; 0 means no time limit."""
    target_psnr: float = 0.0
    """Stop once the PSNR on the full signal reaches this many dB; 0 means no target."""
    seed: int = 0
    """Seed of the initialisation and the mini-batches."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N."""
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    """fp32; tf32 matrix units; or bf16 autocast (fastest; caps PSNR near 50 dB)."""
    compile: bool = False
    """Compile the field's forward and backward with torch.compile."""
    kernel: Literal["auto", "fused", "reference"] = "auto"
    """auto: the fused Triton kernel on CUDA for SIREN, Gaussian and Fourier-feature MLPs up to 64 wide on
    large signals (`fit._fused_single.AUTO_MIN_POINTS` points per step), the reference path (autograd and
    torch's Adam) elsewhere; fused or reference force one."""
    log_every: int = 10
    """Write a log line (and refresh the progress bar) every this many steps."""
    eval_chunk: int = 2**18
    """Points per chunk when evaluating the whole signal."""

    def validate(self) -> None:
        def bad(flag: str, why: str):
            raise UserError(f"{flag} {why}")

        for name in ("steps", "warmup", "batch_size", "seed", "log_every", "eval_chunk"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                bad(f"--{name.replace('_', '-')}", f"must be a whole number, got {value!r}")
        if self.steps <= 0 or self.steps > 10**8:
            bad("--steps", f"must be between 1 and 100000000, got {self.steps}")
        if self.lr is not None and not (0 < self.lr < 10):
            bad("--lr", f"must be in (0, 10), got {self.lr}")
        if not (0 < self.lr_final <= 1):
            bad("--lr-final", f"must be in (0, 1], got {self.lr_final}")
        if self.warmup < 0:
            bad("--warmup", f"must be non-negative, got {self.warmup}")
        if not (0 <= self.sample_fraction <= 1):
            bad("--sample-fraction", f"must be in [0, 1], got {self.sample_fraction}")
        if self.batch_size and self.sample_fraction:
            bad("--batch-size", "and --sample-fraction choose the same thing: give one")
        if self.batch_size < 0:
            bad("--batch-size", f"must be non-negative, got {self.batch_size}")
        if self.max_seconds < 0:
            bad("--max-seconds", f"must be non-negative, got {self.max_seconds}")
        if not (0 <= self.target_psnr <= 200):
            bad("--target-psnr", f"must be between 0 and 200 dB, got {self.target_psnr}")
        if self.log_every <= 0 or self.eval_chunk <= 0:
            bad("--log-every", "and --eval-chunk must be positive")
        if self.precision not in ("fp32", "tf32", "bf16"):
            bad("--precision", f"must be fp32, tf32 or bf16, got {self.precision!r}")
        if self.kernel not in ("auto", "fused", "reference"):
            bad("--kernel", f"must be auto, fused or reference, got {self.kernel!r}")
