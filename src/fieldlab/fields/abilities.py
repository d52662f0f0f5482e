"""What a field can do beyond mapping coordinates to values, declared as abilities.

A field config (or, for `TrainsOnOwnPoints`, a field module) has an ability when its class defines the
ability's members; callers ask `isinstance(config, Croppable)`, never `hasattr`. The check is structural
(see `fieldlab._abilities`), so a new field gains an ability by defining the methods: no base class to
list, no registration.

    Croppable          config.cropped(state, box)            keep the parts a box of the signal needs (crop --keep)
    Partitioned        config.num_parts, .without_parts()    delete parts by index (crop --remove)
    Extendable         config.extended(state, shape)         grow to cover a larger signal (extend)
    Latent             config.latent_shape                   a per-field latent over shared weights (meta-learning)
    TrainsOnOwnPoints  field.training_points(...)            trains on other points than it renders

Whether a field has its own training engine is for `fit/` to say (its engine registry, keyed by config
class), since `fields/` names nothing above it.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

from fieldlab._abilities import Ability

if TYPE_CHECKING:
    import torch

    from fieldlab.fields._config import FieldConfig


class Croppable(Ability):
    @abc.abstractmethod
    def cropped(self, state: dict[str, torch.Tensor], box: tuple[tuple[float, float], ...]
                ) -> tuple[FieldConfig, dict[str, torch.Tensor]]:
        """The config and weights of the field reduced to what `box` (frame samples) needs."""


class Partitioned(Ability):
    @property
    @abc.abstractmethod
    def num_parts(self) -> int:
        """How many parts (partitions, blocks) the field holds."""

    @abc.abstractmethod
    def without_parts(self, state: dict[str, torch.Tensor], parts: list[int]
                      ) -> tuple[FieldConfig, dict[str, torch.Tensor]]:
        """The config and weights of the field with parts `parts` (by index) deleted."""


class Extendable(Ability):
    @abc.abstractmethod
    def extended(self, state: dict[str, torch.Tensor], shape: tuple[int, ...]
                 ) -> tuple[FieldConfig, dict[str, torch.Tensor], list[int]]:
        """The grown config, its weights (new parts freshly initialised) and the indices of the new parts."""


class Latent(Ability):
    @property
    @abc.abstractmethod
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one field's latent; the rest of the network is shared by all fields."""


class TrainsOnOwnPoints(Ability):
    """A field module (not a config) whose training points differ from the signal's samples."""

    @abc.abstractmethod
    def training_points(self, coords: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (coords, values) to train on, from the signal's samples `coords`, `values` on grid `shape`."""


__all__ = ["Croppable", "Extendable", "Latent", "Partitioned", "TrainsOnOwnPoints"]
