"""The base of declared abilities: an ABC whose abstract members a class has, structurally.

`isinstance(x, SomeAbility)` is true when `type(x)` (or a base) defines every abstract member of the
ability, as `collections.abc.Iterable` answers for `__iter__`: no base class to inherit, no registration.
The check reads class dictionaries only, never an instance, and ABCMeta caches it per class.

Why not `typing.Protocol` with `@runtime_checkable`: before Python 3.12 its `isinstance` reads every
member with `hasattr`, evaluating properties on the instance (a MINER config's `num_parts` builds its
module on the meta device: 5.6 ms, and a property that raises would make `isinstance` raise), and from 3.12
it does not, so one check would mean two things across supported versions.
"""

from __future__ import annotations

import abc


class Ability(abc.ABC):
    """Subclass with the ability's members as `abc.abstractmethod`s (properties too); a class that defines
    them all, with none set to None, is an instance."""

    @classmethod
    def __subclasshook__(cls, other: type) -> bool:
        if cls is Ability:
            return NotImplemented
        for name in cls.__abstractmethods__:
            owner = next((base for base in other.__mro__ if name in base.__dict__), None)
            if owner is None or owner.__dict__[name] is None:
                return NotImplemented
        return True
