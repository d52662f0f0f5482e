"""Fused GPU kernels for stacks of MLP fields: forward, squared error, backward and Adam in one launch.

The engines in `fit/` (`fit_batch`, `Fitter`) and the readers in `learn/` (`FieldEvaluator`) use these
names; a field config says what the kernel needs of it through `FieldConfig.fused_spec()`. Modules:

- `fused`: `FusedSpec`, `FusedStack` (packed parameters and Adam moments of f fields), `choose_kernel`
  (`choose_spec` for networks that are no field config's: MINER's blocks),
  `fused_forward`, packing, and the kernel's limits and tuning knobs (`FAST_TRIG`, `NARROW_DIMS`: set them
  on `fieldlab.kernels.fused`, not on this package);
- `single`: `FusedSingle`, one large field stepped by the kernel;
- `hashgrid`: the multiresolution hash encoding's forward pass and table gradient (`HashGridEncoding` on CUDA);
- `triton`: the Triton kernels themselves (imported only where they run: it needs Triton);
- `resources`: what the kernels ask of a GPU's multiprocessor, found by compiling without a GPU;
- `rounding`: the kernel's tf32 and bf16 arithmetic on the reference path, for checks.

`kernels` imports nothing from `fields/` at run time (only for type hints), so `fields/` may import it.
"""

from fieldlab.kernels.fused import (FusedSpec, FusedStack, choose_kernel, choose_spec, describe, encoding_matrix,
                                    fused_forward, fused_spec, interpreted, pack, triton_available, unpack,
                                    use_interpreter)
from fieldlab.kernels.rounding import rounded_operands
from fieldlab.kernels.single import FusedSingle

__all__ = [
    "FusedSingle", "FusedSpec", "FusedStack", "choose_kernel", "choose_spec", "describe", "encoding_matrix",
    "fused_forward", "fused_spec", "interpreted", "pack", "rounded_operands", "triton_available", "unpack",
    "use_interpreter",
]
