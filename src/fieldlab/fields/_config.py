"""The base of every field's frozen `<Name>Config`.

A config holds everything needed to rebuild its module (`build()`), counts the module's parameters
without allocating them, and solves its own size knob for a parameter budget (`with_params`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, ClassVar

import torch
import torch.nn as nn

from fieldlab._errors import UserError
from fieldlab._validate import LIMITS

if typing.TYPE_CHECKING:
    from fieldlab.kernels import FusedSpec

OMEGA0_MAX = 1e5
"""Sine frequency factors above this alias on any grid fieldlab fits (audio uses 3000) and overflow the
initialisation, which scales by 1/ω₀: the fit writes NaN instead of a field."""


@dataclasses.dataclass(frozen=True)
class FieldConfig:
    """Options shared by every field: the coordinate and value dimensions."""

    in_dim: int = 2
    """Number of coordinate dimensions (2 for images)."""
    out_dim: int = 3
    """Number of value channels (3 for RGB)."""

    name: ClassVar[str] = ""
    size_knob: ClassVar[str] = "hidden_dim"
    """The integer option that `with_params` solves for."""
    lr: ClassVar[float] = 1e-3
    """Tuned Adam learning rate for this architecture (the fit loop's default)."""
    may_be_zero: ClassVar[tuple[str, ...]] = ()
    """Numeric options for which 0 is meaningful (all others must be positive; none may be negative)."""
    adam_eps: ClassVar[float] = 1e-8
    adam_betas: ClassVar[tuple[float, float]] = (0.9, 0.999)
    resolved: ClassVar[tuple[str, ...]] = ()
    """Options set from the signal or by fitting, not chosen: kept in field.json (they rebuild the module),
    left out of a run's config.json (which repeats what was chosen, on the same or another signal)."""
    batched: ClassVar[bool] = True
    """Whether the field has the FieldStack batched path (False for a field grown by its own trainer;
    the registry's batched-fit test skips it, saying so)."""
    maxima: ClassVar[dict[str, float]] = {"num_layers": LIMITS.layers, "omega0": OMEGA0_MAX,
                                          "first_omega0": OMEGA0_MAX}
    """Upper bounds of options by name. Unnamed, a whole-number option (a width, a count) is at most
    `LIMITS.width` and each number of a tuple option at most `LIMITS.samples`; the parameter count is at
    most `LIMITS.params`. A subclass extends it: `maxima = {**FieldConfig.maxima, "table_size": ...}`."""

    def build(self) -> nn.Module:
        raise NotImplementedError

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def check_option_names(cls, options: dict[str, Any]) -> None:
        """A `UserError` naming the options that the field does not take, if any."""
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
            takes = ", ".join("--" + k.replace("_", "-") for k in cls.option_names())
            raise UserError(f"field {cls.name!r} does not take {flags}; it takes {takes}")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> FieldConfig:
        """A config from keyword options; an option the field does not take is a `UserError`."""
        cls.check_option_names(options)
        hints = typing.get_type_hints(cls)
        coerced = {k: coerce_option(k, v, hints[k]) for k, v in options.items()}
        config = cls(**coerced)
        config.validate()
        config.check_size()
        return config

    def validate(self) -> None:
        """Raise `UserError` for impossible or absurd values (`maxima`); subclasses extend it. `from_options`
        and `replace` then check the parameter count (`check_size`)."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, flag = getattr(self, f.name), "--" + f.name.replace("_", "-")
            if hints[f.name] in (int, float):
                zero = f.name in self.may_be_zero
                if not math.isfinite(value) or value < 0 or value == 0 and not zero:
                    raise UserError(f"{flag} must be {'non-negative' if zero else 'positive'}, got {value}")
                top = self.maxima.get(f.name, LIMITS.width if hints[f.name] is int else None)
                if top is not None and value > top:
                    raise UserError(f"{flag} must be at most {_number(top)}, got {_number(value)}")
            elif typing.get_origin(hints[f.name]) is tuple:
                _check_sizes(value, flag, self.maxima.get(f.name, LIMITS.samples))
        if self.in_dim > 8:
            raise UserError(f"--in-dim {self.in_dim} is not supported (at most 8 coordinate dimensions)")

    def check_size(self) -> None:
        """Raise `UserError` when the field would have more than `LIMITS.params` parameters: counted without
        allocating, and only after `validate` has bounded every option, so the count itself stays quick."""
        params = self.num_params()
        if params > LIMITS.params:
            raise UserError(f"{self.name} with these options has {params:,} parameters (at most {LIMITS.params:,})")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FieldConfig:
        return cls.from_options(dict(data))

    def replace(self, **changes) -> FieldConfig:
        config = dataclasses.replace(self, **changes)
        config.validate()
        config.check_size()
        return config

    def fused_spec(self) -> FusedSpec | None:
        """What the fused kernel (`fieldlab.kernels`) needs to know of this field, or None where the field is not
        an MLP it runs; the kernel itself also turns away specs past its limits (`kernels.fused_spec`)."""
        return None

    def adapt(self, shape: tuple[int, ...]) -> FieldConfig:
        """Resolve options that depend on the signal's sample grid (`shape`); most fields need none."""
        return self

    linked: ClassVar[tuple[tuple[str, ...], ...]] = (("omega0", "first_omega0"),)
    """Options that `item_defaults` sets together: a user who gives one of a group keeps the class defaults
    of the others (`--omega0 30` on a dataset means the whole-signal SIREN, not ω₀ 30 behind a first layer
    of 5)."""

    def item_defaults(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """Option defaults for a dataset of small items of grid `shape`, read on the config of the user's
        own options (which win over them). The class's own defaults are made for one large signal: a dataset's field gets a
        small network, and a bandwidth for the item's few samples, so that it is a sensible function between
        them too (chosen on other images than the ones scored: benchmarks/bandwidth_sweep.py)."""
        return {}

    # -- size -----------------------------------------------------------------------------------
    def num_params(self) -> int:
        """Number of trainable scalars, counted on the meta device (nothing is allocated)."""
        with torch.device("meta"):
            module = self.build()
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    def widest(self) -> int:
        """The field's widest layer output (hidden, global or output width): what a point's activations hold."""
        return max([self.out_dim] + [getattr(self, k) for k in ("hidden_dim", "global_dim")
                                     if isinstance(getattr(self, k, None), int)])

    def fit_bytes(self, points: int) -> int:
        """About the memory a fit of this field needs with `points` points per step, counted without
        allocating: fp32 weights, gradients and Adam's two moments, and per point and layer the activations
        autograd keeps (pre-activation, activation, its gradient) at the field's widest hidden size."""
        return 16 * self.num_params() + 12 * points * self.widest() * getattr(self, "num_layers", 1)

    def with_params(self, target: int) -> FieldConfig:
        """The config whose size knob gives the parameter count closest to `target`."""
        if target <= 0:
            raise UserError(f"--params must be positive, got {target}")
        knob = self.size_knob

        def count(k: int) -> int:
            return dataclasses.replace(self, **{knob: k}).num_params()

        lo, hi = 1, 2
        while count(hi) < target:
            lo, hi = hi, hi * 2
            if hi > 2**24:
                raise UserError(f"--params {target} is too large for field {self.name!r}")
        while hi - lo > 1:  # the count grows with the knob: bisect for the last k below target
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
        if knob == "hidden_dim" and lo >= 64:
            # From 64 wide, a multiple of 8: on a GPU, matrices of other widths fall to cuBLAS's unaligned
            # kernels (SIREN 4×257 at 512² on an H100: 3.0× a naive SIREN's speed, 4×256: 4.0×).
            lo, hi = lo - lo % 8, lo - lo % 8 + 8
        best = min((lo, hi), key=lambda k: abs(count(k) - target))
        best = lo if count(best) > LIMITS.params else best  # the closest may be just past the limit
        return self.replace(**{knob: best})


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _check_sizes(values: Any, flag: str, top: float) -> None:
    """Every whole number in a (possibly nested) tuple option is at most `top` (-1 marks a removed cell)."""
    for value in values:
        if isinstance(value, tuple):
            _check_sizes(value, flag, top)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not -1 <= value <= top:
            raise UserError(f"{flag} holds {_number(value)}; each number must be between 0 and {_number(top)}")


def per_item_side(value_at_8: float, shape: tuple[int, ...], most: float) -> float:
    """A bandwidth chosen for 8-sample items, scaled with the item's longest side (a bandwidth is a
    frequency, so it follows the samples per unit length) and capped at the whole-signal default `most`."""
    return min(most, value_at_8 * max(shape) / 8)


def coerce_option(name: str, value: Any, hint: Any) -> Any:
    """Turn a CLI string or JSON value into the option's declared type (any dataclass's options: fit's,
    meta-learning's and networks' too); a value it cannot take is a `UserError` naming `--name`."""
    flag = "--" + name.replace("_", "-")
    origin = typing.get_origin(hint)
    try:
        if origin in (typing.Union, types.UnionType):  # X | None: None stays None
            if value is None:
                return None
            options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
            return coerce_option(name, value, options[0]) if len(options) == 1 else value
        if origin is typing.Literal:
            choices = typing.get_args(hint)
            if value not in choices:
                raise UserError(f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")
            return value
        if origin is tuple:
            item = typing.get_args(hint)[0]
            if isinstance(value, str):
                value = [v for v in value.replace(" ", ",").split(",") if v]
            return tuple(coerce_option(name, v, item) for v in value)
        if hint is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise UserError(f"{flag} must be true or false, got {value!r}")
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if hint is float:
            return float(value)
        return value
    except UserError:
        raise
    except (TypeError, ValueError):
        raise UserError(f"{flag} expects {getattr(hint, '__name__', hint)}, got {value!r}") from None


def option_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass and its bases (the string literal after each field)."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, after in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and \
                    isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs
