"""A named registry of classes: the field registry and the network registry are both one of these."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from fieldlab._errors import UserError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes registered under unique names. `kind` names an entry in messages ("field"); `listing`
    introduces the known names in the unknown-name error ("registered fields:")."""

    def __init__(self, kind: str, listing: str):
        self.kind = kind
        self.listing = listing
        self.entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: sets `cls.name` and files the class under `name`; a duplicate name raises."""

        def decorator(cls: T) -> T:
            if name in self.entries:
                raise ValueError(f"{self.kind} {name!r} is already registered by {self.entries[name].__qualname__}")
            cls.name = name
            self.entries[name] = cls
            return cls

        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self.entries)

    def get(self, name: str) -> T:
        """The class registered under `name` (dashes and underscores are one: `spatial-functa` names
        `spatial_functa`); an unknown name is a `UserError` that lists the known ones."""
        if name not in self.entries:
            spelled = {n.replace("_", "-"): n for n in self.entries}.get(str(name).replace("_", "-"))
            if spelled is None:
                raise UserError(f"unknown {self.kind} {name!r}; {self.listing} {', '.join(self.names())}")
            name = spelled
        return self.entries[name]
