"""The fused path for batched MLP fields: one GPU kernel per Adam step of a whole stack of fields.

`FieldStack` (vmap over the module) is the reference path and runs everywhere. For the plain MLP
fields that datasets use — SIREN, Gaussian, ReLU on Fourier features (random or positional, at most 128
frequencies, encoded in the kernel) — with widths up to 128, up to 4 activated layers, at most
16 input and 16 output channels, a Triton kernel (`kernels.triton`) does forward, squared error,
backward and Adam of every field in one launch, with activations kept in registers instead of memory.
Each field config describes itself (`FieldConfig.fused_spec()`); `fused_spec(config)` says whether the
kernel covers it; `FusedStack` holds the packed parameters and Adam moments of f fields and steps them.
`auto` uses it on CUDA only; on a CPU the kernels run (slowly) through Triton's interpreter when
`TRITON_INTERPRET=1` was set as they were imported, which the tests do.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING

import torch

from fieldlab._errors import UserError

if TYPE_CHECKING:  # fields/ imports kernels (FusedSpec): at run time kernels never imports fields
    from fieldlab.fields import FieldConfig

MAX_WIDTH, MAX_LAYERS, MAX_CHANNELS, MAX_FREQUENCIES = 128, 4, 16, 128
AUTO_MAX_WIDTH = 64
"""`auto` takes the kernel up to this width: at 128 its weights and gradients overflow the registers (348
fields/s for SIREN 3×128 on an H100, no faster than the reference path); `--kernel fused` still runs it.
For Fourier features `auto` also asks that the encoding be no wider than a hidden layer (its two gradient
accumulators, cosines and sines, then take what one hidden layer's does)."""
FP32_AUTO_MAX_WIDTH = 32
"""At fp32 `auto` takes the kernel only up to this width: its three-TF32 products beat the reference path at
2×32 (SIREN, 2,172 fields/s against 931 on an H200) but not at 3×64 (195 against 331), where tf32 (1,890)
and bf16 (2,927) are the kernel's precisions (BENCHMARKS.md, fifth pass)."""
TF32_MAX_WIDTH = 64
"""Widest field the kernel runs at tf32 or fp32. At TF32, 128-wide fields ask Triton 3.6 for 330 KB of
shared memory (fp32 weight tiles for the tensor cores; H100: 227 KB) and do not compile, and fp32 is three
TF32 products; bf16 (half the bytes) compiles. fp32 on the CUDA cores (IEEE products) would compile, but ran
SIREN 3×128 at 9.4 fields/s on an H200 against the reference path's 128 (benchmarks/fit_dataset.py)."""
FAST_TRIG = True
"""At tf32 and bf16 the kernels take the GPU's fast sine and cosine (libdevice `fast_sinf`), whose error
is below the products' rounding; False evaluates them exactly (for checks: tests/gpu/check_fused.py)."""
AUTO_PARTITIONED = True
"""Whether `auto` takes the kernel for a partitioned field (`FusedSpec.partitioned`, Local-Global's local mode),
and then only for steps that take every point (`choose_kernel`'s `full_batch`). On an H100
(`benchmarks/fit_single.py --field local`, 4×15 partitions, the same draws and end PSNR on both paths)
full-batch steps ran 10.8× (fp32), 23.7× (tf32) and 27.5× (bf16) the reference path at a 512² crop and 3.7× /
17.0× (fp32 / bf16) on the whole 1356×2040 photo, but steps of 65,536 random points 0.33× / 0.76× / 1.09×: a
mini-batch's points are grouped by partition at every step (BENCHMARKS.md). `--kernel fused` runs it at any
batch."""
_ACTIVATIONS = {"sine": 0, "gauss": 1, "relu": 2}
_ENCODINGS = {"none": 0, "gaussian": 1, "positional": 2}
_PRECISIONS = {"fp32": 4, "tf32": 1, "bf16": 2}  # MM codes of kernels.triton (fp32: tf32x3)


@dataclasses.dataclass(frozen=True)
class FusedSpec:
    """What the kernel needs to know of an MLP field: sizes, activation and its scales."""

    in_dim: int
    hidden_dim: int
    out_dim: int
    num_layers: int
    activation: str
    first_scale: float
    hidden_scale: float
    encoding: str = "none"
    """none (the first layer reads the coordinates), gaussian or positional Fourier features."""
    frequencies: int = 0
    """Rows F of the encoding matrix A (angles x Aᵀ): γ has F cosines and F sines (and x, positional)."""
    prefix: str = ""
    """Where the MLP's layers sit in the module's parameter names (`mlp.` for Fourier fields)."""
    partitioned: bool = False
    """The field is one such MLP per partition, each point routed to one (Local-Global's local mode): its module
    gives the stacked layers and each training point's partition (`kernels.single`). Single fits only: a stack
    of such fields (`fit-dataset`, evaluation of a store) takes the reference path."""

    @property
    def encoded_dim(self) -> int:
        """Inputs of the first layer."""
        passthrough = self.in_dim if self.encoding != "gaussian" else 0
        return passthrough + 2 * self.frequencies

    @property
    def layer_dims(self) -> list[tuple[int, int]]:
        dims = [self.encoded_dim] + [self.hidden_dim] * self.num_layers + [self.out_dim]
        return list(zip(dims[:-1], dims[1:]))

    @property
    def num_params(self) -> int:
        return sum(i * o + o for i, o in self.layer_dims)

    def flops_per_point(self) -> int:
        """Multiply-adds ×2 of one point's forward pass (the backward is about twice this)."""
        return 2 * (sum(i * o for i, o in self.layer_dims) + self.frequencies * self.in_dim)


def fused_spec(config: FieldConfig) -> FusedSpec | None:
    """The fused description of `config` (its own `fused_spec()`), or None when the kernel does not cover
    it: the field is no MLP the kernel runs, or it is past the kernel's limits."""
    return within_limits(config.fused_spec())


def within_limits(spec: FusedSpec | None) -> FusedSpec | None:
    """`spec` where the kernel covers its sizes, else None."""
    if spec is None:
        return None
    if not (spec.hidden_dim <= MAX_WIDTH and 1 <= spec.num_layers <= MAX_LAYERS and spec.in_dim <= MAX_CHANNELS
            and spec.out_dim <= MAX_CHANNELS and spec.frequencies <= MAX_FREQUENCIES):
        return None
    return spec


def encoding_matrix(spec: FusedSpec, tensors: dict[str, torch.Tensor], fields: int) -> torch.Tensor | None:
    """The kernel's per-field encoding matrices A (fields, F, in_dim) fp32 from a Fourier field's buffers
    (stacked per field, or one for all), None for fields without an encoding."""
    if spec.encoding == "none":
        return None
    if spec.encoding == "gaussian":  # the random frequencies B; the kernel multiplies x Bᵀ by 2π
        frequencies = tensors["encoding.frequencies"].float()
        return frequencies.expand(fields, *frequencies.shape[-2:]).contiguous()
    scales = tensors["encoding.scales"].float()  # π 2^k: angle (i, k) = x_i · scales[k] is row i·K + k
    scales = scales.expand(fields, scales.shape[-1])
    eye = torch.eye(spec.in_dim, dtype=torch.float32, device=scales.device)
    return (eye[None, :, None, :] * scales[:, None, :, None]).reshape(fields, spec.frequencies, spec.in_dim).contiguous()


def interpreted() -> bool:
    """Whether the kernels run through Triton's interpreter (TRITON_INTERPRET=1 when they were imported)."""
    module = sys.modules.get("fieldlab.kernels.triton")
    flag = getattr(module, "INTERPRETED", None)  # None also while another thread is importing it
    return flag if flag is not None else os.environ.get("TRITON_INTERPRET") == "1"


def use_interpreter() -> None:
    """Run the kernels through Triton's interpreter (on the CPU; slow — for tests). Sets TRITON_INTERPRET=1
    for the process (Triton reads it again in lazy imports while interpreting; `auto` ignores it on a CPU)
    and must come before the kernels are first imported: compiled ones cannot be swapped."""
    os.environ["TRITON_INTERPRET"] = "1"
    import fieldlab.kernels.triton as triton_kernels

    if not triton_kernels.INTERPRETED:
        raise RuntimeError("the fused kernels were imported compiled already; interpret them in a process of their own")


@functools.cache
def triton_installed() -> bool:
    """Whether Triton can be imported (asked once: the kernels' dispatch asks at every step)."""
    return importlib.util.find_spec("triton") is not None


_COMPILER_LOCK = threading.Lock()
_COMPILER: threading.Thread | None = None


def prepare_compiler() -> None:
    """Start, once a process and where Triton compiles (installed, not interpreted), the part of a first
    Triton compile that every kernel shares, on a daemon thread: Triton's cache key hashes its own library
    (415 MB, 0.3 s; a compile from the cache pays it too), which leaves the interpreter free meanwhile, so
    it overlaps a command's checks and imports instead of following them (`fit.loop.warm_device` starts
    it). `fieldlab.kernels.triton` waits for it when imported (`compiler_prepared`). A Triton without this
    key, or a failure, is left to the first compile."""
    global _COMPILER
    with _COMPILER_LOCK:
        if _COMPILER is not None or not triton_installed() or os.environ.get("TRITON_INTERPRET") == "1":
            return

        def prepare() -> None:
            try:
                try:
                    from triton.runtime.cache import triton_key  # Triton 3.3 on
                except ImportError:
                    from triton.compiler.compiler import triton_key
                triton_key()  # cached by Triton for the process
            except Exception:  # noqa: BLE001 -- the first compile computes it again, and reports what fails
                pass

        _COMPILER = threading.Thread(target=prepare, name="fieldlab-triton-key", daemon=True)
        _COMPILER.start()


def compiler_prepared() -> None:
    """Wait for `prepare_compiler`'s thread, if one was started (so that a compile does not hash Triton's
    library a second time beside it)."""
    thread = _COMPILER
    if thread is not None and thread is not threading.current_thread():
        thread.join()


def triton_available(device: torch.device) -> bool:
    """Whether the kernels can run for tensors on `device`: CUDA with Triton, or Triton's interpreter."""
    return triton_installed() and (device.type == "cuda" or interpreted())


def choose_kernel(config: FieldConfig, device: torch.device, kernel: str, precision: str = "fp32", *,
                  forward: bool = False, single: bool = False, full_batch: bool = False) -> FusedSpec | None:
    """The spec to run fused at `precision`, or None for the reference path; `kernel` is auto, fused or
    reference; `forward`: for evaluation (the forward kernel), not fitting (the step kernel); `single`: for one
    field's fit (`kernels.single`), the only one that runs a partitioned spec (`FusedSpec.partitioned`);
    `full_batch`: its steps take every point (`auto` takes a partitioned spec then only: `AUTO_PARTITIONED`).

    auto: fused on CUDA when the config qualifies, is at most AUTO_MAX_WIDTH wide (FP32_AUTO_MAX_WIDTH at
    fp32), Triton is installed and the kernel fits the GPU's shared memory;
    fused: any qualifying config on CUDA, or through
    Triton's interpreter on a CPU, and a clear error when it cannot run; reference: never fused.
    """
    spec = _spec_for(config, single)
    if spec is None and kernel == "fused" and config.fused_spec() is not None:
        raise UserError(f"--kernel fused runs the partitions of a {config.name} field in `fieldlab fit` only; "
                        f"use --kernel auto or reference here")
    what = f"this {config.name} field" + (_past_limits(config.fused_spec()) if kernel == "fused" else "")
    return choose_spec(spec, device, kernel, precision, forward=forward, what=what, full_batch=full_batch)


def _past_limits(spec: FusedSpec | None) -> str:
    """' (layers×width, in, out[, frequencies])' for a spec past the kernel's limits (what `--kernel fused`'s
    refusal names), else ''."""
    if spec is None or within_limits(spec) is not None:
        return ""
    frequencies = f", {spec.frequencies} frequencies" if spec.frequencies else ""
    return f" ({spec.num_layers}×{spec.hidden_dim}, {spec.in_dim} in, {spec.out_dim} out{frequencies})"


def _spec_for(config: FieldConfig, single: bool) -> FusedSpec | None:
    """The config's spec where the caller can run it: a partitioned one (`FusedSpec.partitioned`) in a single
    field's fit only, every other one anywhere."""
    spec = config.fused_spec()
    return None if spec is not None and spec.partitioned and not single else spec


def choose_spec(spec: FusedSpec | None, device: torch.device, kernel: str, precision: str = "fp32", *,
                forward: bool = False, what: str = "this field", full_batch: bool = False) -> FusedSpec | None:
    """`choose_kernel` for a spec at hand (None: no MLP the kernel runs, `what` in the error; past the
    kernel's limits counts as None): for engines whose networks are no field config's, such as MINER's blocks."""
    if kernel == "reference":
        return None
    if precision not in _PRECISIONS:  # fp16 needs a loss scale, which the reference path keeps
        if kernel == "fused":
            raise UserError(f"--kernel fused runs fp32, tf32 or bf16, not {precision}; use --kernel auto or reference")
        return None
    spec = within_limits(spec)
    if kernel == "fused":
        if spec is None:
            raise UserError(f"--kernel fused covers siren, gauss and fourier fields, local-global's local mode and "
                            f"miner's sine blocks up to "
                            f"{MAX_WIDTH} wide, {MAX_LAYERS} layers, {MAX_CHANNELS} channels and {MAX_FREQUENCIES} "
                            f"frequencies; use --kernel auto or reference for {what}")
        if not triton_available(device):
            missing = "a CUDA device" if triton_installed() else "a CUDA device and Triton (pip install triton)"
            raise UserError(f"--kernel fused needs {missing}; use --kernel auto or reference here")
        if not forward and precision in ("fp32", "tf32") and _pow2(spec.hidden_dim) > TF32_MAX_WIDTH:  # TF32 tiles
            raise UserError(f"--kernel fused runs fields wider than {TF32_MAX_WIDTH} at bf16 only, not {precision} "
                            f"(fp32 and tf32 take TF32 weight tiles, which need 330 KB of shared memory at this "
                            f"width; an H100 has 227 KB); "
                            f"use --precision bf16 or --kernel reference")
        problem = _resource_problem(spec, precision, device, forward)
        if problem is not None:
            instead = "--precision bf16 or --kernel reference" if precision != "bf16" else "--kernel reference"
            raise UserError(f"--kernel fused cannot run this field here: {problem}; use {instead}")
        return spec
    if kernel != "auto":
        raise UserError(f"--kernel must be auto, fused or reference, got {kernel!r}")
    return _auto_choice(spec, precision, device, forward, full_batch)[0]


def _auto_choice(spec: FusedSpec | None, precision: str, device: torch.device, forward: bool,
                 full_batch: bool = False) -> tuple[FusedSpec | None, str | None]:
    """`auto`'s spec (None: the reference path), and why not the kernel where only the GPU's limits stood in
    its way (for the log)."""
    widest = FP32_AUTO_MAX_WIDTH if precision == "fp32" else AUTO_MAX_WIDTH
    if spec is not None and spec.partitioned and not (AUTO_PARTITIONED and full_batch):
        return None, None
    if not (spec is not None and spec.hidden_dim <= widest and 2 * spec.frequencies <= _pow2(spec.hidden_dim)
            and device.type == "cuda" and triton_installed()):
        return None, None
    problem = _resource_problem(spec, precision, device, forward)
    return (spec, None) if problem is None else (None, problem)


@functools.lru_cache(maxsize=None)
def _resource_problem(spec: FusedSpec, precision: str, device: torch.device, forward: bool) -> str | None:
    """Why the kernel would not launch on CUDA `device` (too much shared memory), or None (also off CUDA
    and under the interpreter, where there is no such limit). Compiles the kernel for the device's
    architecture and reads its limits once per process and question (`kernels.resources`): evaluation asks
    at every batch."""
    if device.type != "cuda" or interpreted():
        return None
    from fieldlab.kernels.resources import Multiprocessor, refusal

    try:
        return refusal(spec, precision, Multiprocessor.of(device), forward=forward)
    except Exception as error:  # a check that cannot run leaves the launch to Triton's own, as before it
        logging.getLogger("fieldlab").warning("could not check the fused kernel against this GPU's shared memory "
                                              "(%s: %s)", type(error).__name__, error)
        return None


def describe(config: FieldConfig, device: torch.device, kernel: str, precision: str, *, single: bool = False) -> str:
    """One line for a log: which path `fit_batch` (or, `single`, one field's fit) takes for `config` on `device`."""
    if kernel == "auto":
        spec, why = _auto_choice(within_limits(_spec_for(config, single)), precision, device, False)
    else:
        spec, why = choose_kernel(config, device, kernel, precision, single=single), None
    if spec is None:
        return "reference path (FieldStack, vmap)" + (f"; not the fused kernel: {why}" if why else "")
    encoded = f" on {spec.frequencies} {spec.encoding} Fourier frequencies" if spec.encoding != "none" else ""
    each = " per partition" if spec.partitioned else ""
    return (f"fused Triton kernel ({spec.activation} MLP {spec.num_layers}×{spec.hidden_dim}{each}{encoded}, "
            f"{precision})")


def pack(params: dict[str, torch.Tensor], spec: FusedSpec) -> torch.Tensor:
    """Stacked module parameters {"layers.i.weight": (f, out, in), …} → (f, P) in the kernel's layout."""
    parts = []
    for i in range(len(spec.layer_dims)):
        weight = params[f"{spec.prefix}layers.{i}.weight"]
        parts += [weight.transpose(1, 2).reshape(weight.shape[0], -1), params[f"{spec.prefix}layers.{i}.bias"]]
    return torch.cat([p.float() for p in parts], dim=1).contiguous()


def unpack(flat: torch.Tensor, spec: FusedSpec) -> dict[str, torch.Tensor]:
    """The inverse of `pack`: (f, P) → {"layers.i.weight": (f, out, in), "layers.i.bias": (f, out)} (names
    with the spec's prefix)."""
    out, offset, f = {}, 0, flat.shape[0]
    for i, (fan_in, fan_out) in enumerate(spec.layer_dims):
        weight = flat[:, offset:offset + fan_in * fan_out].reshape(f, fan_in, fan_out)
        out[f"{spec.prefix}layers.{i}.weight"] = weight.transpose(1, 2).contiguous()
        offset += fan_in * fan_out
        out[f"{spec.prefix}layers.{i}.bias"] = flat[:, offset:offset + fan_out].clone()
        offset += fan_out
    return out


def _pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


NARROW_DIMS = (2,)
"""Coordinate dimensions whose first layer (in fields without an encoding) the kernel computes as one outer
product per coordinate instead of a tensor-core tile padded to 16 columns: that layer is fp32, on the CUDA
cores, and the tile made it 8× the products for 2-D coordinates. On an H100 (BENCHMARKS.md, fourteenth pass)
2-D SIREN 2×32 bf16 steps ran 1.2× faster at the same block (10,306 against 8,587 fields/s) and 3×64 1.23×;
with the block it allows (`default_block`), 2×32 runs 17,000. Other dimensions keep the tile until a GPU has
checked and timed them: compiled for sm_90, 3-D takes fewer instructions narrow and spills no more, 1-D spills
more at 3×64 (BENCHMARKS.md, "The narrow first layer at 1-D and 3-D").

An earlier form, a (points, D, width) broadcast summed over its middle axis, gave wrong values compiled for
sm_90 (relative error 0.6-1.3) where Triton's interpreter gave the right ones; the present one uses 2-D
tensors only and passes tests/gpu/check_field_evaluator.py and check_fused.py (relative error 2e-7)."""


def _coordinate_width(spec: FusedSpec) -> int:
    """The kernel's padded coordinate width DP: a power of two ≥ D; below 16 the kernel takes the narrow
    first layer (`NARROW_DIMS`), at 16 the tile (also what the Fourier encoding's product needs)."""
    if spec.encoding == "none" and spec.in_dim in NARROW_DIMS:
        return 1 << (spec.in_dim - 1).bit_length()
    return _pow2(spec.in_dim)


def _meta(spec: FusedSpec, precision: str, block: int) -> dict:
    emulated = interpreted()
    fast = FAST_TRIG and precision != "fp32" and not emulated
    mm = 3 if precision == "bf16" and emulated else _PRECISIONS[precision]
    return dict(D=spec.in_dim, H=spec.hidden_dim, C=spec.out_dim, NH=spec.num_layers, DP=_coordinate_width(spec),
                HP=_pow2(spec.hidden_dim), CP=_pow2(spec.out_dim), BN=block, ACT=_ACTIVATIONS[spec.activation],
                W_FIRST=spec.first_scale, W_HIDDEN=spec.hidden_scale, MM=mm, FAST=fast,
                ENC=_ENCODINGS[spec.encoding], F=spec.frequencies, FP=_pow2(max(spec.frequencies, 1)),
                DI=spec.encoded_dim - 2 * spec.frequencies, IN0=spec.encoded_dim)


def default_block(spec: FusedSpec, precision: str) -> tuple[int, int]:
    """(points per chunk, warps) that keep a chunk's activations and the weights in registers, measured on an
    H100 (benchmarks/fit_dataset.py --tune). Up to 32 wide one warp per field: more programs of one field
    each share a multiprocessor, whose other programs hide each one's latencies (2×32 with the narrow first
    layer: bf16 16,904 fields/s at 32 points × 1 warp, 13,265 at 64 × 2, 10,306 at 32 × 2; tf32 and fp32
    prefer 16 points per chunk, fp32 by 2.5×; fp32 at three layers two warps, below). SIREN 3×64 at bf16
    takes 64 points × 4 warps with `default_knobs` (3,898-3,947 fields/s against 3,421-3,471 at 32 × 4
    without; 2,819 at 64 × 4 without)."""
    if interpreted():  # Triton's interpreter (CPU tests): no registers to spare, and each chunk costs numpy calls
        return 64, 1
    width = _pow2(spec.hidden_dim)
    if width <= 32:
        if precision == "bf16":
            return 32, 1
        # At fp32 (three TF32 products a product) three layers spill at one warp, 1.8-1.9 KB at 3×18 and 3×32
        # (benchmarks/kernel_resources.py), and none at two: MINER's 3×18 blocks fitted its 4096² upscale 2.44×
        # faster at 16 × 2 than at 16 × 1 (H100, BENCHMARKS.md, "MINER at fp32 and tf32 on the kernel").
        return 16, (2 if precision == "fp32" and spec.num_layers >= 3 else 1)
    if width <= 64:
        return (64 if default_knobs(spec, precision) == (1, 1) else 32), 4
    return 32, 8


def default_knobs(spec: FusedSpec, precision: str) -> tuple[int, int]:
    """(sums, first) of `launch_constants` where none are given: 3×64 SIREN at bf16 ran 3,947 fields/s with
    both at 64 points × 4 warps against 3,433 without (H100, the same call; `fit_batch` 4,153 against 3,580:
    BENCHMARKS.md, fifteenth pass). Only 3×64 on 2-D coordinates was timed; other SIRENs 64 wide take it on
    that evidence (the same registers and shuffles bind them). At 2×32 and tf32 neither knob gained beyond the
    run-to-run spread, and the first layer's tile cost 2×32 a third."""
    measured = spec.activation == "sine" and spec.encoding == "none" and _pow2(spec.hidden_dim) == 64
    return (1, 1) if precision == "bf16" and measured else (0, 0)


ONE_WARP_SUMS = 2
"""`SUMS` where a block has one warp at bf16 or tf32 and `default_knobs` gives none: the biases' and a narrow
first layer's gradients, and the loss, kept as partial sums within the lanes, reduced once a step instead of
once a chunk (SIREN 2×32 bf16's chunk loop 1,531 → 1,297 instructions, 196 → 86 shuffles; tf32 1,367 → 1,158;
compiled for sm_90). On an H100, three rounds taking turns in one process: 2×32 bf16 17,945-19,150 fields/s
against 15,136-17,763 with lane sums (+12% on the means), tf32 10,531-10,741 against 9,440-10,023 (+9%). Not at
fp32, where they ran the same (2,343 and 2,422 against 2,357 and 2,421) and 2×32's one warp spills more.

Such blocks also keep each layer's scaled pre-activation w·z (the step kernel's `FOLD`): with partial sums the
chunk loop then takes 1,297 instructions and spills nothing, against 1,388 and 12 B with z. Blocks of more warps
keep z: at 3×64 bf16 the scaled form took 96 fewer instructions yet ran 4.5% slower on an H100 (3,841 and 3,918
fields/s against 4,014 and 4,105; BENCHMARKS.md)."""


def launch_constants(spec: FusedSpec, precision: str, *, betas: tuple[float, float] = (0.9, 0.999),
                     eps: float = 1e-8, block: int | None = None, warps: int | None = None, reload: bool | None = None,
                     stages: int | None = None, max_registers: int | None = None,
                     recompute: int = 0, sums: int | None = None,
                     first: int | None = None) -> tuple[dict, dict]:
    """The step kernel's compile-time arguments and launch options for `spec` at `precision`: (one program
    per field, split). None takes the defaults: `default_block`, weights read at use (RELOAD) from 64 wide,
    Triton's pipelining and register limit. recompute: how many leading layers' pre-activations the
    backward pass computes again rather than holds (0, 1, 2; a register-pressure knob for
    benchmarks/fit_dataset.py --tune). sums: 1 sums the hidden and head biases' gradients over a chunk's
    points as a product of ones with them on the tensor cores, 0 as a reduction across lanes (shuffles), 2
    (for one warp) every bias's and a narrow first layer's gradients as partial sums within the lanes,
    reduced across them once a step; None: 2 where the block has one warp at bf16 or tf32 (`ONE_WARP_SUMS`),
    else `default_knobs`.
    first: 1 takes the first layer of a field without an encoding as a TF32×3 tile of the coordinates and a
    column of ones (its bias as the weight's last row), 0 as `NARROW_DIMS` says. None: `default_knobs`."""
    default = default_block(spec, precision)
    knobs = default_knobs(spec, precision)
    tuned_one_warp = (warps or default[1]) == 1 and precision != "fp32"  # `ONE_WARP_SUMS` and FOLD measured
    if sums is None:
        sums = ONE_WARP_SUMS if tuned_one_warp and knobs[0] == 0 else knobs[0]
    first = (knobs[1] if first is None else first) if spec.encoding == "none" and spec.in_dim < 16 else 0
    reload = _pow2(spec.hidden_dim) >= 64 if reload is None else reload
    constants = dict(_meta(spec, precision, block or default[0]), RELOAD=reload, RECOMPUTE=recompute,
                     SUMS=sums, FIRST=first, FOLD=int(tuned_one_warp),
                     B1=betas[0], B2=betas[1], EPS=eps, num_warps=warps or default[1])
    if first:  # the coordinates and a column of ones (the bias) as a tile
        constants["DP"] = _pow2(spec.in_dim + 1)
    if stages is not None:
        constants["num_stages"] = stages
    if max_registers is not None:
        constants["maxnreg"] = max_registers
    split = constants
    if block is None and warps is None and _pow2(spec.hidden_dim) <= 32:
        # Split, a field's points are shared among about four programs per multiprocessor (`default_parts`),
        # too few one-warp programs to hide each other's latencies: two warps of 32 points, as before.
        split = dict(constants, BN=32, num_warps=2, SUMS=0 if sums == 2 else sums, FOLD=0)  # as more warps do
    if constants["HP"] >= 128 and stages is None:
        # Pipelined, the split kernel at 128 wide asks 344 KB of shared memory (an H100 has 227 KB).
        split = dict(constants, num_stages=1)
    return constants, split


def forward_constants(spec: FusedSpec, precision: str, block: int = 64) -> dict:
    """The forward kernel's compile-time arguments and launch options (`fused_forward`). Values are read at
    TF32 at least: bf16 products in this kernel hit an illegal memory access on an H100 with Triton 3.6
    (3×64 SIREN), and evaluation is cheap next to training."""
    return dict(_meta(spec, "tf32" if precision == "bf16" else precision, block), HAS_IDX=False, num_warps=4)


class FusedStack:
    """f MLP fields packed for the kernel: parameters and Adam moments as (f, P) fp32 tensors."""

    def __init__(self, spec: FusedSpec, params: dict[str, torch.Tensor], *, buffers: dict[str, torch.Tensor] | None = None,
                 precision: str = "fp32", betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 block: int | None = None, warps: int | None = None, reload: bool | None = None,
                 stages: int | None = None, max_registers: int | None = None, recompute: int = 0,
                 sums: int | None = None, first: int | None = None):
        from fieldlab.kernels import triton as triton_kernels  # Triton only where the fused path runs

        self.kernels = triton_kernels
        self.spec, self.precision, self.betas, self.eps = spec, precision, betas, eps
        self.flat = pack(params, spec)
        if spec.encoding != "none" and buffers is None:
            raise ValueError(f"a {spec.encoding} Fourier field needs its buffers (the encoding) to be fused")
        self.encoding = encoding_matrix(spec, buffers or {}, len(self.flat))
        if self.encoding is not None:
            self.encoding = self.encoding.to(self.flat.device)
        self.m = torch.zeros_like(self.flat)
        self.v = torch.zeros_like(self.flat)
        self.step_count = 0
        self._multiprocessors: int | None = None
        # The kernel's compile-time arguments, fixed for the stack (not rebuilt every step).
        self._constants, self._split_constants = launch_constants(
            spec, precision, betas=betas, eps=eps, block=block, warps=warps, reload=reload, stages=stages,
            max_registers=max_registers, recompute=recompute, sums=sums, first=first)
        self.reload = self._constants["RELOAD"]

    def __len__(self) -> int:
        return self.flat.shape[0]

    def select(self, keep: torch.Tensor) -> None:
        """Keep the fields `keep` (with their Adam moments)."""
        self.flat, self.m, self.v = self.flat[keep].contiguous(), self.m[keep].contiguous(), self.v[keep].contiguous()
        if self.encoding is not None:
            self.encoding = self.encoding[keep].contiguous()

    def params(self) -> dict[str, torch.Tensor]:
        return unpack(self.flat, self.spec)

    def hyper(self, lrs: list[float], first_step: int = 1) -> torch.Tensor:
        """Rows [lr, 1 − β1^t, √(1 − β2^t), 0] of Adam steps t = first_step, first_step + 1, … with learning
        rates `lrs`, on the stack's device. Rows are 4 floats so that every row starts 16-byte aligned: Triton
        specialises on pointer alignment, and rows of 3 compiled a second kernel variant mid-run."""
        b1, b2 = self.betas
        t = torch.arange(first_step, first_step + len(lrs), dtype=torch.float64)
        table = torch.stack([torch.tensor(lrs, dtype=torch.float64), 1 - b1 ** t, (1 - b2 ** t).sqrt(),
                             torch.zeros_like(t)], dim=1)
        return table.float().to(self.flat.device)

    def step(self, coords: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, lr: float | torch.Tensor,
             index: torch.Tensor | None = None, parts: int | None = None,
             fields: slice | None = None, counts: torch.Tensor | None = None,
             mean_over: int | None = None) -> torch.Tensor:
        """One Adam step of every field on the sum over fields of its mean squared error.

        coords (n, d) shared by all fields; values (r, n, c) the targets, field i using values[rows[i]];
        index (f, k) int the points each field uses this step (all n when None). Returns each field's
        summed squared error (f,) before the update. `lr` may be a ready row of `hyper`. `parts` > 1
        shares each field's points among that many programs (few fields with many points): their
        gradients are summed in memory and Adam is a separate pass; by default 1 when there are enough
        fields to fill the GPU. `fields`: step only this slice of the stack (rows, index, values and the
        result are then the slice's), for a caller whose targets reach the device a part at a time; the step
        count advances by one per call all the same, so such a caller passes its own `hyper` rows. `counts` (f,)
        int: field i uses only the first counts[i] points of its `index` row (fields of unequal point counts,
        the rows padded to k). Each field's loss is its squared error over `mean_over` · c values (default k).
        """
        self.step_count += 1
        hyper = lr if isinstance(lr, torch.Tensor) else self.hyper([lr], self.step_count)[0]
        parts = parts or self.default_parts(index.shape[1] if index is not None else values.shape[1], fields)
        if parts > 1:
            loss, grad = self.gradients(coords, values, rows, index=index, parts=parts, fields=fields, counts=counts,
                                        mean_over=mean_over)
            flat, m, v, _ = self._views(fields)
            numel, block = flat.numel(), 1024
            self.kernels.fused_adam[(_cdiv(numel, block),)](flat, m, v, grad, hyper, numel,
                                                             B1=self.betas[0], B2=self.betas[1], EPS=self.eps,
                                                             BLOCK=block, num_warps=4)
            return loss
        return self._launch(coords, values, rows, index, hyper, 1, fields, counts, mean_over)[0]

    def gradients(self, coords: torch.Tensor, values: torch.Tensor, rows: torch.Tensor,
                  index: torch.Tensor | None = None, parts: int = 1, fields: slice | None = None,
                  counts: torch.Tensor | None = None,
                  mean_over: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed squared error (f,), gradient (f, P) of the mean squared errors) without updating."""
        return self._launch(coords, values, rows, index, None, parts, fields, counts, mean_over)

    def _views(self, fields: slice | None):
        """(parameters, m, v, encoding) of the fields in `fields` (all when None): row slices, contiguous."""
        if fields is None:
            return self.flat, self.m, self.v, self.encoding
        encoding = None if self.encoding is None else self.encoding[fields]
        return self.flat[fields], self.m[fields], self.v[fields], encoding

    def default_parts(self, points: int, fields: slice | None = None) -> int:
        """Programs per field: enough for about four per multiprocessor, at most one per chunk of points."""
        if self.flat.device.type != "cuda":
            return 1
        if self._multiprocessors is None:
            self._multiprocessors = torch.cuda.get_device_properties(self.flat.device).multi_processor_count
        programs = 4 * self._multiprocessors
        count = len(self) if fields is None else len(range(len(self))[fields])
        return max(1, min(_cdiv(programs, count), _cdiv(points, self._split_constants["BN"])))

    def _launch(self, coords, values, rows, index, hyper, parts: int, fields: slice | None = None,
                counts: torch.Tensor | None = None, mean_over: int | None = None):
        flat, m, v, encoding = self._views(fields)
        f, (n, c) = len(flat), values.shape[1:]
        k = n if index is None else index.shape[1]
        split = hyper is None
        loss = (torch.zeros if split else torch.empty)(f, dtype=torch.float32, device=flat.device)
        grad = torch.zeros_like(flat) if split else flat
        idx = index.to(torch.int32).contiguous() if index is not None else rows
        constants = self._split_constants if split else self._constants
        chunks = _cdiv(_cdiv(k, parts), constants["BN"])
        parts = _cdiv(k, chunks * constants["BN"])
        rows = (rows if rows.dtype == torch.int32 else rows.to(torch.int32)).contiguous()
        if counts is not None and index is None:
            raise ValueError("per-field point counts count the points of an index")
        cnt = rows if counts is None else counts.to(torch.int32).contiguous()
        encoding, enc_stride = _encoding_arguments(encoding, flat)
        self.kernels.fused_mlp_step[(f, parts)](
            flat, m, v, grad, coords.float().contiguous(), values.float().contiguous(), idx, rows, cnt,
            loss, flat if split else hyper, encoding, k, n, 1.0 / ((mean_over or k) * c), enc_stride,
            HAS_IDX=index is not None, HAS_CNT=counts is not None, SPLIT=split, CHUNKS=chunks, **constants)
        return loss, grad

    def forward(self, coords: torch.Tensor, precision: str | None = None, fields: slice | None = None) -> torch.Tensor:
        """Values (f, n, c) at coords (n, d) shared by the fields, or (f, n, d) per field; at the stack's
        precision unless `precision` says otherwise; of the fields in the slice `fields` only, where given."""
        flat, _, _, encoding = self._views(fields)
        return fused_forward(self.spec, flat, coords, precision=precision or self.precision, encoding=encoding)


def _encoding_arguments(encoding: torch.Tensor | None, flat: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The kernels' (ENCP, enc_stride): the per-field encoding matrices, or any tensor when there are none."""
    if encoding is None:
        return flat, 0
    return encoding, encoding.shape[1] * encoding.shape[2]


def fused_forward(spec: FusedSpec, flat: torch.Tensor, coords: torch.Tensor, *, precision: str = "fp32",
                  block: int = 64, encoding: torch.Tensor | None = None) -> torch.Tensor:
    """Values (f, n, c) of the packed fields `flat` (f, P) at coords (n, d) or (f, n, d); `encoding` the
    fields' encoding matrices (`encoding_matrix`) for Fourier fields."""
    from fieldlab.kernels import triton as triton_kernels

    f = flat.shape[0]
    if (encoding is None) != (spec.encoding == "none"):
        raise ValueError("fused_forward needs the encoding matrices of Fourier fields, and only of those")
    per_field = coords.dim() == 3
    n = coords.shape[-2]
    out = torch.empty(f, n, spec.out_dim, dtype=torch.float32, device=flat.device)
    coords = coords.float().contiguous()
    flat = flat.float().contiguous()
    encoding, enc_stride = _encoding_arguments(encoding, flat)
    triton_kernels.fused_mlp_forward[(f, _cdiv(n, block))](
        flat, coords, coords, out, encoding, n, enc_stride, **forward_constants(spec, precision, block),
        X_PER_FIELD=per_field)
    return out


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)
