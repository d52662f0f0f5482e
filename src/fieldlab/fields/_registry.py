"""The field registry: every architecture registers its config class under one name.

>>> from fieldlab.fields import create_field, list_fields
>>> field = create_field("siren", in_dim=2, out_dim=3, hidden_dim=64)
"""

from __future__ import annotations

import torch.nn as nn

from fieldlab._registry import Registry
from fieldlab.fields._config import FieldConfig

_FIELDS: Registry[type[FieldConfig]] = Registry("field", "registered fields:")


def register_field(name: str):
    """Class decorator that registers a `FieldConfig` subclass under `name`; a duplicate name raises."""
    return _FIELDS.register(name)


def list_fields() -> list[str]:
    """Registered field names, sorted."""
    return _FIELDS.names()


def get_config_class(name: str) -> type[FieldConfig]:
    """The config class registered under `name`."""
    return _FIELDS.get(name)


def make_config(name: str, **options) -> FieldConfig:
    """A config of field `name`, with `options` checked against the config's own fields."""
    return get_config_class(name).from_options(options)


def create_field(name: str, **options) -> nn.Module:
    """Build the field registered under `name`."""
    return make_config(name, **options).build()
