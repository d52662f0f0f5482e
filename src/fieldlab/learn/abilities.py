"""What a network config can do beyond `build`, declared as abilities (structural, as
`fieldlab.fields.abilities` declares a field's); `train` asks `isinstance(cfg, SizedByPoints)`, never `hasattr`.

    SizedByPoints   cfg.for_points(n, dim)            resolves an option (a support, a grid size) from the
                                                      number of training points
    BuiltForStore   cfg.build_for_store(store, k)     needs the store's field architecture itself (seg_hyper)
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

from fieldlab._abilities import Ability

if TYPE_CHECKING:
    import torch.nn as nn


class SizedByPoints(Ability):
    @abc.abstractmethod
    def for_points(self, n: int, dim: int) -> Any:
        """This config with its point-dependent options resolved for n training points in [-1, 1]^dim."""


class BuiltForStore(Ability):
    @abc.abstractmethod
    def build_for_store(self, store: Any, classes: int) -> nn.Module:
        """The network for the fields of `store` (a FieldStore), answering `classes` classes."""


__all__ = ["BuiltForStore", "SizedByPoints"]
