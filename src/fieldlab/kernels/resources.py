"""What the fused kernels ask of a GPU's multiprocessor, found without a GPU.

Triton compiles a kernel for a named target without a device and says how much shared memory a program
takes; the ptxas and cuobjdump that Triton ships report registers per thread, bytes spilled to local memory
and the machine instructions. From these, the programs that one multiprocessor can hold at once follow. The kernels are compiled with the launch
constants that `FusedStack` and `fused_forward` use (`launch_constants`, `forward_constants`), so what
is reported is what those launches run, up to Triton's specialisation of the runtime integers, which this
module sets as a launch over `points` points would.

A GPU check catches a kernel that asks for more shared memory than a multiprocessor has (the 128-wide
TF32 kernel did, on an H100); this module catches it on a CPU (`tests/kernels/test_fused_resources.py`),
and `benchmarks/kernel_resources.py` prints the table that explains the kernel's rates (BENCHMARKS.md).

Needs Triton with its NVIDIA backend, and the kernels compiled rather than interpreted: run it in a
process without TRITON_INTERPRET=1.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import subprocess
import tempfile

import torch

from fieldlab.kernels.fused import FusedSpec, _cdiv, forward_constants, interpreted, launch_constants


@dataclasses.dataclass(frozen=True)
class Multiprocessor:
    """The limits of one streaming multiprocessor that decide how many programs it holds at once."""

    name: str
    arch: int
    """Compute capability ×10 (90: Hopper)."""
    registers: int = 65_536
    shared: int = 233_472
    """Shared memory per multiprocessor, bytes."""
    shared_per_program: int = 232_448
    """The most one program (thread block) may ask for, bytes; a launch that asks more fails."""
    reserved_shared: int = 1_024
    """Shared memory the hardware keeps per program."""
    max_warps: int = 64
    max_programs: int = 32
    register_unit: int = 256
    """Registers are given to warps in units of this many."""
    count: int = 132
    """Multiprocessors on the GPU (H100 SXM, H200): how many programs share one large field's points."""

    @classmethod
    def of(cls, device: torch.device) -> "Multiprocessor":
        """The multiprocessors of CUDA `device`, with the per-program shared memory limit that Triton checks
        at launch."""
        from triton.runtime import driver

        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        shared_per_program = driver.active.utils.get_device_properties(index)["max_shared_mem"]
        major, minor = torch.cuda.get_device_capability(index)
        # torch's properties name the rest (older versions lack some: Hopper's then stand in)
        return cls(props.name, 10 * major + minor, shared_per_program=shared_per_program,
                   registers=getattr(props, "regs_per_multiprocessor", HOPPER.registers),
                   shared=getattr(props, "shared_memory_per_multiprocessor", shared_per_program),
                   max_warps=getattr(props, "max_threads_per_multi_processor", 32 * HOPPER.max_warps) // 32,
                   count=props.multi_processor_count)


HOPPER = Multiprocessor("sm_90 (H100, H200)", 90)


@dataclasses.dataclass(frozen=True)
class KernelResources:
    """One compiled kernel's demands: per thread (registers, spills), per program (shared memory, warps)."""

    registers: int
    spill_stores: int
    """Bytes stored to local memory per thread when the registers run out."""
    spill_loads: int
    shared: int
    """Shared memory per program, bytes."""
    warps: int
    instructions: int = 0
    """Machine instructions in the compiled kernel (SASS; most of them the chunk loop's body, run once per
    chunk): a count, not a time, but fewer for the same work is a kernel that issues less."""
    loop: dict[str, int] = dataclasses.field(default_factory=dict)
    """Instructions of the kernel's longest loop (the step kernel's chunk loop) by opcode, "total" among them:
    what one chunk issues. Shuffles, shared-memory loads and stores (SHFL, LDS, STS, LDSM, STSM) share the
    load-store pipe; MUFU is the sine and cosine; HMMA / HGMMA the tensor cores."""

    def fits(self, sm: Multiprocessor = HOPPER) -> bool:
        """Whether a program can be launched at all (its shared memory is within the per-program limit)."""
        return self.shared <= sm.shared_per_program

    def programs(self, sm: Multiprocessor = HOPPER) -> dict[str, int]:
        """How many programs one multiprocessor holds, as each of its limits allows."""
        per_warp = _cdiv(self.registers * 32, sm.register_unit) * sm.register_unit
        return {"registers": sm.registers // (per_warp * self.warps),
                "shared": sm.shared // (self.shared + sm.reserved_shared),
                "warps": sm.max_warps // self.warps,
                "programs": sm.max_programs}

    def occupancy(self, sm: Multiprocessor = HOPPER) -> float:
        """Resident warps over the most a multiprocessor can hold (0 when a program does not fit)."""
        if not self.fits(sm):
            return 0.0
        return min(self.programs(sm).values()) * self.warps / sm.max_warps

    def limit(self, sm: Multiprocessor = HOPPER) -> str:
        """Which limit sets the programs per multiprocessor (the first of ties, in `programs`' order)."""
        counts = self.programs(sm)
        return min(counts, key=counts.get)


def refusal(spec: FusedSpec, precision: str, sm: Multiprocessor, *, forward: bool = False) -> str | None:
    """Why the step kernel (the forward kernel, `forward`) of `spec` at `precision` cannot be launched on
    `sm`, in a sentence; None when it can. Compiled once per process and question."""
    kernel = _compiled(spec, precision, sm.arch, forward)
    if kernel.fits(sm):
        return None
    return (f"its {'forward' if forward else 'step'} kernel at {precision} needs {kernel.shared // 1024} KB of "
            f"shared memory per program, and this GPU ({sm.name}) allows {sm.shared_per_program // 1024} KB")


@functools.lru_cache(maxsize=None)
def _compiled(spec: FusedSpec, precision: str, arch: int, forward: bool) -> KernelResources:
    """The kernel's shared memory for architecture `arch` (no registers or instructions: no tool is run)."""
    sm = dataclasses.replace(HOPPER, arch=arch)
    return (forward_resources(spec, precision, sm=sm, report=False) if forward
            else step_resources(spec, precision, sm=sm, report=False))


def step_resources(spec: FusedSpec, precision: str, *, points: int = 1024, split: bool = False,
                   index: bool = False, sm: Multiprocessor = HOPPER, report: bool = True,
                   **tuning) -> KernelResources:
    """The step kernel (`fused_mlp_step`) as `FusedStack.step` launches it for fields of `points` points:
    one program per field, or `split` (one large field), with a per-field point `index` or all points.
    `tuning`: `launch_constants`' block, warps, reload, stages, max_registers, recompute. Without `report`,
    only the shared memory is read (registers, spills and instructions are left 0: no tool is run)."""
    from fieldlab.kernels import triton as triton_kernels

    constants, split_constants = launch_constants(spec, precision, **tuning)
    block = constants["BN"]
    parts = min(4 * sm.count, _cdiv(points, block)) if split else 1  # as `FusedStack.default_parts`
    constants = dict(split_constants if split else constants, HAS_IDX=index, HAS_CNT=False, SPLIT=split,
                     CHUNKS=_cdiv(_cdiv(points, parts), block))
    fields = ("PRM", "M", "V", "G", "X", "T", "LOSS", "HYP", "ENCP")
    types = {**{name: "*fp32" for name in fields}, "IDX": "*i32", "ROWS": "*i32", "CNT": "*i32", "K": "i32", "N": "i32",
             "loss_scale": "fp32", "enc_stride": "i32"}
    aligned = [*fields, "IDX", "ROWS", "CNT"] + (["K", "N"] if points % 16 == 0 else []) + ["enc_stride"]
    return _compile(triton_kernels.fused_mlp_step, types, aligned, constants, sm, report)


def forward_resources(spec: FusedSpec, precision: str, *, points: int = 1024, per_field: bool = False,
                      sm: Multiprocessor = HOPPER, report: bool = True) -> KernelResources:
    """The forward kernel (`fused_mlp_forward`) as `fused_forward` launches it."""
    from fieldlab.kernels import triton as triton_kernels

    constants = dict(forward_constants(spec, precision), X_PER_FIELD=per_field)
    pointers = ("PRM", "X", "IDX", "Y", "ENCP")
    types = {**{name: "*fp32" for name in pointers}, "K": "i32", "enc_stride": "i32"}
    aligned = [*pointers] + (["K"] if points % 16 == 0 else []) + ["enc_stride"]
    return _compile(triton_kernels.fused_mlp_forward, types, aligned, constants, sm, report)


def _compile(kernel, types: dict[str, str], aligned: list[str], constants: dict, sm: Multiprocessor,
             report: bool) -> KernelResources:
    """Compile `kernel` for `sm` with the runtime argument `types` (those in `aligned` specialised as
    multiples of 16, as Triton does for 16-byte-aligned pointers and such integers) and `constants`
    (compile-time arguments and the launch options num_warps, num_stages, maxnreg); with `report`, read
    ptxas -v's registers and spills and count the instructions."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if interpreted():
        raise RuntimeError("the fused kernels are interpreted in this process (TRITON_INTERPRET=1); "
                           "compile them in a process of their own")
    options = {key: constants.pop(key) for key in ("num_warps", "num_stages", "maxnreg") if key in constants}
    names = kernel.arg_names
    signature = {name: types.get(name, "constexpr") for name in names}
    missing = [name for name in names if signature[name] == "constexpr" and name not in constants]
    if missing:
        raise ValueError(f"no type or value for {kernel.__name__}'s arguments {missing}")
    attributes = {(names.index(name),): [["tt.divisibility", 16]] for name in aligned}
    source = ASTSource(kernel, signature, constexprs=constants, attrs=attributes)
    compiled = triton.compile(source, target=GPUTarget("cuda", sm.arch, 32), options=options)
    # a maxnreg option is a directive in the PTX
    counts = _ptxas_report(compiled.asm["ptx"], sm.arch) if report else dict(registers=0, spill_stores=0, spill_loads=0)
    instructions, loop = _instructions(compiled.asm["cubin"]) if report else (0, {})
    return KernelResources(shared=compiled.metadata.shared, warps=compiled.metadata.num_warps,
                           instructions=instructions, loop=loop, **counts)


def _instructions(cubin: bytes) -> tuple[int, dict[str, int]]:
    """Instructions in `cubin`, as cuobjdump -sass lists them (one per line with an address and opcode), and
    those of its longest backward branch's span (the chunk loop) by opcode."""
    from triton import knobs

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.cubin")
        with open(path, "wb") as file:
            file.write(cubin)
        listing = subprocess.run([knobs.nvidia.cuobjdump.path, "-sass", path], capture_output=True, text=True,
                                 check=True).stdout
    found = [(int(address, 16), opcode, target) for address, opcode, target in re.findall(
        r"^\s+/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)\S*(?:\s+0x([0-9a-f]+))?",
        listing, flags=re.MULTILINE)]
    loops = [(address - int(target, 16), int(target, 16), address) for address, opcode, target in found
             if opcode == "BRA" and target and int(target, 16) < address]
    loop: dict[str, int] = {}
    if loops:
        _, start, end = max(loops)
        for address, opcode, _ in found:
            if start <= address <= end:
                loop[opcode] = loop.get(opcode, 0) + 1
        loop["total"] = sum(loop.values())
    return len(found), loop


def _ptxas_report(ptx: str, arch: int) -> dict[str, int]:
    """Registers and spills of `ptx` as ptxas -v reports them for compute capability `arch`."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.ptx")
        with open(path, "w") as file:
            file.write(ptx)
        command = [get_ptxas(arch).path, "-v", f"--gpu-name={sm_arch_from_capability(arch)}", path, "-o", os.devnull]
        log = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    registers = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if registers is None or spills is None:
        raise RuntimeError(f"unexpected ptxas report: {log.strip()[-300:]}")
    return dict(registers=int(registers.group(1)), spill_stores=int(spills.group(1)),
                spill_loads=int(spills.group(2)))
