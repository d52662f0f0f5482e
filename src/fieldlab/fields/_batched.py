"""The batched path: f fields of one architecture evaluated together.

Parameters and buffers of f independent modules are stacked along a leading fields dimension and the
single-field module is evaluated with `torch.func.vmap(functional_call)`, so every registered field gets
a batched path for free and one implementation serves fitting, meta-learning and evaluation of stored
fields. Parameters named in `shared` are held once and given to every field unbatched (functa's shared
network; only the latents are stacked). Shapes: coords (f, n, d) → values (f, n, c).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.func import functional_call, stack_module_state, vmap

from fieldlab.fields._config import FieldConfig


def _key(name: str) -> str:  # ParameterDict keys may not contain dots
    return name.replace(".", "__")


FLOAT32_EXACT = 2**24
"""Integers up to this size survive a float32 copy exactly."""


def restore_buffer(stored: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """A per-field buffer read back from a store (which holds every tensor as float32), in the template's
    dtype. An integer buffer whose values a float32 copy cannot hold exactly (a hash grid's primes, about
    2.6e9) is derived from the config, not fitted: the template's value is the true one for every field.
    Decided on the template (small, usually on the CPU), so evaluating stored fields never waits on a
    reduction of the stored tensors."""
    exact = template.is_floating_point() or template.is_complex() or template.dtype == torch.bool or \
        template.numel() == 0 or int(template.abs().max()) < FLOAT32_EXACT
    if exact:
        return stored.to(template.dtype)
    return template.to(stored.device).expand(stored.shape[0], *template.shape).clone()


class FieldStack(nn.Module):
    """f independent fields with stacked parameters; `forward(coords (f, n, d)) -> (f, n, c)`.

    Training a stack with an elementwise optimizer (Adam) on the sum of per-field losses is the same as
    training each field alone: nothing couples the fields.
    """

    def __init__(self, template: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 shared: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self._template = [template.to("meta")]  # a list hides it from .parameters() and .to()
        self._names = list(params)
        self._buffer_names = list(buffers)
        self.params = nn.ParameterDict({_key(k): nn.Parameter(v) for k, v in params.items()})
        shared = shared or {}
        self._shared_names = list(shared)
        self.shared = nn.ParameterDict({_key(k): v if isinstance(v, nn.Parameter) else nn.Parameter(v)
                                        for k, v in shared.items()})
        for name, value in buffers.items():
            self.register_buffer("buf__" + _key(name), value)

    @classmethod
    def from_modules(cls, modules: list[nn.Module]) -> FieldStack:
        """Stack modules of one architecture (their current weights are copied)."""
        params, buffers = stack_module_state(modules)
        params = {k: v.detach().clone() for k, v in params.items()}
        buffers = {k: v.clone() for k, v in buffers.items()}
        return cls(copy.deepcopy(modules[0]), params, buffers)

    @classmethod
    def from_config(cls, config: FieldConfig, num_fields: int, *, shared_init: bool = False) -> FieldStack:
        """`num_fields` fields built from `config`, each with its own random draw unless `shared_init`."""
        if shared_init:
            one = config.build()
            return cls.from_modules([copy.deepcopy(one) for _ in range(num_fields)])
        return cls.from_modules([config.build() for _ in range(num_fields)])

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(stacked parameters, stacked buffers) by module name; the live tensors, not copies."""
        params = {name: self.params[_key(name)] for name in self._names}
        buffers = {name: getattr(self, "buf__" + _key(name)) for name in self._buffer_names}
        return params, buffers

    def select(self, index: torch.Tensor) -> FieldStack:
        """The fields `index` as a new stack (stacked tensors copied; shared ones held by both)."""
        params, buffers = self.state()
        return FieldStack(self._template[0], {k: v.detach()[index].clone() for k, v in params.items()},
                          {k: v[index].clone() for k, v in buffers.items()}, shared=dict(self.shared_params()))

    def shared_params(self) -> dict[str, torch.Tensor]:
        return {name: self.shared[_key(name)] for name in self._shared_names}

    def forward(self, coords: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Values (f, n, c) at `coords` (f, n, d); `params` replaces stacked tensors by name, so a caller
        can differentiate through per-field values that are not this stack's parameters."""
        template = self._template[0]

        def one(params, buffers, x, shared):
            return functional_call(template, (params, buffers, shared), (x,))

        stacked, buffers = self.state()
        stacked.update(params or {})
        return vmap(one, in_dims=(0, 0, 0, None))(stacked, buffers, coords, self.shared_params())

    def field(self, index: int) -> nn.Module:
        """Field `index` as an ordinary module (a copy)."""
        module = copy.deepcopy(self._template[0])
        params, buffers = self.state()
        for name, value in params.items():
            owner, leaf = _owner(module, name)
            setattr(owner, leaf, nn.Parameter(value[index].detach().clone()))
        held = dict(module.named_parameters())
        for name, value in self.shared_params().items():
            if name in held:  # shared tensors the module does not have (a meta-learner's rates) stay out
                owner, leaf = _owner(module, name)
                setattr(owner, leaf, nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            owner, leaf = _owner(module, name)
            owner._buffers[leaf] = value[index].detach().clone()
        return module


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    return module, leaf
