"""A field's own training, registered in `fit/` by config class, so `fields/` never names `fit/`.

A field fitted by the standard loop registers nothing. A field with its own training (MINER grows its pyramid
block by block) registers it where that training lives:

    register_engine(MinerConfig, OwnEngine(fit=fit, fit_mesh=fit_mesh, options=MinerTrainConfig))  # fit/miner.py

An `OwnEngine` is a record of entry points (what `fit` calls instead of its loop), not a stepper: the classes
that do the steps (`StackEngine`, `FusedEngine`, `Fitter`, MINER's `ScaleTrainer`, …) are listed in
`fit/engine.py` (`STEPPERS`).

and `engine_for(config)` answers it (None: the standard loop). Datasets of fields are fitted by a
`DatasetFitter`, registered the same way (`fit.batched.register_dataset_fitter(FunctaConfig, ...)`).
A lookup walks the config's class hierarchy, so a subclass inherits its base's entry unless it has its own.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Generic, TypeVar

V = TypeVar("V")


class ByConfigClass(Generic[V]):
    """Values filed under config classes; registering a class twice raises."""

    def __init__(self, kind: str):
        self.kind = kind
        self.entries: dict[type, V] = {}

    def register(self, config_class: type, value: V) -> None:
        if config_class in self.entries:
            raise ValueError(f"a {self.kind} for {config_class.__qualname__} is already registered")
        self.entries[config_class] = value

    def get(self, config: object) -> V | None:
        """The value registered for `config`'s class or its nearest base, else None."""
        for cls in type(config).__mro__:
            if cls in self.entries:
                return self.entries[cls]
        return None


@dataclasses.dataclass(frozen=True)
class OwnEngine:
    """A field's own training, in place of `fit.loop.fit` (and `fit.occupancy.fit_mesh` for meshes; None:
    the field cannot be fitted to a mesh). Both take the standard functions' arguments."""

    fit: Callable
    fit_mesh: Callable | None = None
    options: type | None = None
    """The engine's own training config (a frozen dataclass, e.g. MINER's `MinerTrainConfig`): its fields
    are `fit` options of the field, and its instance reaches `fit` and `fit_mesh` as `train=`."""
    precisions: tuple[str, ...] = ("fp32", "tf32", "bf16")
    """The `--precision` values the engine runs (fp16 needs a loss scale, which only the standard loop keeps)."""


_ENGINES: ByConfigClass[OwnEngine] = ByConfigClass("training engine")


def register_engine(config_class: type, engine: OwnEngine) -> None:
    """Fit fields of `config_class` (and its subclasses) with `engine` (a duplicate raises)."""
    _ENGINES.register(config_class, engine)


def engine_for(config: object) -> OwnEngine | None:
    """The engine registered for `config`'s field, or None for the standard loop."""
    return _ENGINES.get(config)


def engine_options(config_class: type) -> type | None:
    """The training config class of the engine registered for fields of `config_class`, or None."""
    engine = next((_ENGINES.entries[c] for c in config_class.__mro__ if c in _ENGINES.entries), None)
    return engine.options if engine is not None else None


__all__ = ["ByConfigClass", "OwnEngine", "engine_for", "engine_options", "register_engine"]
