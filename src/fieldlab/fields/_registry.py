"""The field registry: every architecture registers its config class under one name.

>>> from fieldlab.fields import create_field, list_fields
>>> field = create_field("siren", in_dim=2, out_dim=3, hidden_dim=64)
"""

from __future__ import annotations

from typing import TypeVar

import torch.nn as nn

from fieldlab._errors import UserError
from fieldlab.fields._config import FieldConfig

_REGISTRY: dict[str, type[FieldConfig]] = {}
C = TypeVar("C", bound=type[FieldConfig])


def register_field(name: str):
    """Class decorator that registers a `FieldConfig` subclass under `name`; a duplicate name raises."""

    def decorator(config_cls: C) -> C:
        if name in _REGISTRY:
            raise ValueError(f"field {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        config_cls.name = name
        _REGISTRY[name] = config_cls
        return config_cls

    return decorator


def list_fields() -> list[str]:
    """Registered field names, sorted."""
    return sorted(_REGISTRY)


def get_config_class(name: str) -> type[FieldConfig]:
    """The config class registered under `name`."""
    if name not in _REGISTRY:
        raise UserError(f"unknown field {name!r}; registered fields: {', '.join(list_fields())}")
    return _REGISTRY[name]


def make_config(name: str, **options) -> FieldConfig:
    """A config of field `name`, with `options` checked against the config's own fields."""
    return get_config_class(name).from_options(options)


def create_field(name: str, **options) -> nn.Module:
    """Build the field registered under `name`."""
    return make_config(name, **options).build()
