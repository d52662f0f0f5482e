"""The fused kernel's arithmetic written in torch, for checks (tests/kernels/test_fused.py, tests/gpu): inside
`rounded_operands`, the reference path's products round their operands as the kernel does at tf32 or bf16
and accumulate in fp32, so that the two paths can be compared at equal arithmetic."""

from __future__ import annotations

import contextlib

import torch


def _to_tf32(x: torch.Tensor) -> torch.Tensor:
    """x rounded to the nearest TF32 (10 mantissa bits, ties to even), in fp32: the kernel's `_round_tf32`."""
    u = x.contiguous().view(torch.int32)
    return ((u + 0xFFF + ((u >> 13) & 1)) & -8192).view(torch.float32)


_ROUNDINGS = {"bf16": lambda x: x.to(torch.bfloat16).float(), "tf32": _to_tf32}
_rounding = _ROUNDINGS["bf16"]  # what `_RoundForward` and `_RoundBackward` apply; set by `rounded_operands`


class _Elementwise(torch.autograd.Function):
    """An elementwise autograd function of one tensor, with no saved state."""

    @classmethod
    def vmap(cls, info, in_dims, x):  # elementwise: apply to the whole batch (torch 2.11 cannot vmap TF32's bit view)
        return cls.apply(x), in_dims[0]

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass


class _RoundForward(_Elementwise):
    """Rounding of a product's operand; the gradient passes unchanged."""

    @staticmethod
    def forward(x):
        return _rounding(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _RoundBackward(_Elementwise):
    """Identity forward; the incoming gradient rounded (the backward products' shared operand)."""

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return _rounding(grad)


@contextlib.contextmanager
def rounded_operands(kind: str):
    """The fused kernel's arithmetic at precision `kind` on the reference path, for checks (tests,
    tests/gpu): inside, nn.Linear — the products after an MLP field's first layer, which `exact_linear`
    computes — rounds its operands to nearest bf16 or TF32 (activations and weights forward, the incoming
    gradient backward) and accumulates in fp32; at "fp32" nothing changes. Run the reference at fp32
    precision inside it. Not thread-safe: it patches nn.Linear."""
    if kind == "fp32":  # the kernel's three TF32 products are fp32 to within its rounding: nothing to emulate
        yield
        return
    global _rounding
    original, previous = torch.nn.Linear.forward, _rounding

    def forward(self, x):
        y = torch.nn.functional.linear(_RoundForward.apply(x), _RoundForward.apply(self.weight))
        return _RoundBackward.apply(y) + self.bias  # the bias gradient sums the unrounded gradient

    torch.nn.Linear.forward, _rounding = forward, _ROUNDINGS[kind]
    try:
        yield
    finally:
        torch.nn.Linear.forward, _rounding = original, previous
