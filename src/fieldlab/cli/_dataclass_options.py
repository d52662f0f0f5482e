"""A command's options generated from config dataclasses, so a default and its help are written once.

typer reads a command's options from its function's signature. `config_command` rewrites that signature
(`__signature__`) at registration: the function keeps its own parameters (arguments, --out, --force, …)
and gains one keyword-only option per dataclass field (`--kebab-case`, the field's type, its attribute
docstring as help, Literal choices as the metavar, `--x/--no-x` for bools) plus `--config FILE`. Every
generated option defaults to None, so the command sees what was given, not the dataclass's default: file
values (`--config`) are defaults that explicit flags override, and the configs fill in the rest. Literal
choices are shown but not enforced by click, so each config's own `validate()` keeps its error text.

Typer stays the one CLI library: a signature rewrite keeps its help, completion and error handling,
where a click-level adapter would have to re-create them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import typer

from fieldlab._errors import UserError


@dataclasses.dataclass(frozen=True)
class Option:
    """One generated option: its name (a dataclass field's), type, default and help."""

    name: str
    hint: Any
    default: Any
    help: str
    as_text: bool = False
    """The flag takes text that the command's config coerces and checks itself (with its own messages);
    a config file's value is still coerced to `hint`."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def options_of(cls: type, *, only: tuple[str, ...] | None = None, skip: tuple[str, ...] = (),
               defaults: dict[str, Any] | None = None, helps: dict[str, str] | None = None) -> list[Option]:
    """The options of dataclass `cls`'s fields (`only` these, in their order; never `skip`), with their
    declared defaults unless `defaults` names another, and their docstrings as help unless `helps` does."""
    from fieldlab.fields import option_docs

    docs, hints = option_docs(cls), typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = [n for n in (only or fields) if n not in skip]
    found = []
    for name in names:
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else None
        default = (defaults or {}).get(name, default)
        found.append(Option(name, hints[name], default, (helps or {}).get(name) or docs.get(name, "")))
    return found


def config_command(*groups: list[Option], positional: dict[str, str] | None = None, extras: bool = False):
    """Decorate a command `fn(..., options: dict)`: typer sees fn's own parameters (minus `options`), one
    option per entry of `groups` (the first of a name wins), and `--config FILE`. `fn` gets `options`: the
    file's values under the given flags, only what was given, keyed by field name. `positional` (name →
    metavar) are fn's arguments that a file may also give (a run's config.json names its input); a required
    one given by neither is click's own sentence. `extras`: the command takes free `--name VALUE` options
    (a field's or a network's), so a file's other keys are passed on for the config that owns them to check;
    otherwise they are one error naming them."""
    generated: dict[str, Option] = {}
    for group in groups:
        for option in group:
            generated.setdefault(option.name, option)
    positional = positional or {}

    def decorate(fn: Callable) -> Callable:
        own = inspect.signature(fn, eval_str=True)
        kept = [p for n, p in own.parameters.items() if n != "options"]
        taken = {p.name for p in kept}
        new = [_parameter(o) for n, o in generated.items() if n not in taken]
        config = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                   default=typer.Option(None, help="JSON/TOML file of options: defaults that "
                                                        "explicit flags override (an output's resolved config "
                                                        "repeats its run)."))

        @functools.wraps(fn)
        def command(**kwargs):
            path = kwargs.pop("config", None)
            given = {n: kwargs.pop(n) for n in list(kwargs) if n in generated and n not in taken}
            given = {n: v for n, v in given.items() if v is not None}
            for name in positional:
                value = kwargs.pop(name, None)
                if value not in (None, [], ()):
                    given[name] = value
            options = {**(read_options(path, generated, positional, extras) if path else {}), **given}
            for name, metavar in positional.items():
                if options.get(name) is not None:
                    options[name] = _argument(name, options[name], own.parameters[name].annotation)
                elif _required(own.parameters[name]):
                    raise UserError(f"Missing argument '{metavar}'.")
            return fn(**kwargs, options=options)

        for name in positional:  # optional to click: a file may give it
            index = next(i for i, p in enumerate(kept) if p.name == name)
            info = kept[index].default
            if isinstance(info, typer.models.ArgumentInfo) and info.default is ...:
                info = typer.Argument(None, help=info.help, metavar=positional[name],
                                      show_default=False)
            kept[index] = kept[index].replace(annotation=_optional(kept[index].annotation), default=info)
        command.__signature__ = own.replace(parameters=_ordered(kept + new + [config]))
        command.generated = generated
        return command

    return decorate


def _required(parameter: inspect.Parameter) -> bool:
    info = parameter.default
    return isinstance(info, typer.models.ArgumentInfo) and info.default is ...


def _argument(name: str, value: Any, annotation: Any) -> Any:
    """An argument's value from a config file as the command's type: a path or a string (or a list of them)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    hint = args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1 \
        else annotation
    if typing.get_origin(hint) in (list, typing.List):
        if not isinstance(value, list):
            value = [value]
        return [_argument(name, v, typing.get_args(hint)[0]) for v in value]
    if isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise UserError(f"{name.upper()} expects a path or name, got {value!r}")
    return Path(value) if hint is Path else value


def _ordered(parameters: list[inspect.Parameter]) -> list[inspect.Parameter]:
    """Positional-or-keyword parameters first, then keyword-only ones (inspect's rule)."""
    first = [p for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in parameters if p not in first]
    return first + rest


def _optional(annotation: Any) -> Any:
    return annotation if type(None) in typing.get_args(annotation) else Optional[annotation]


def _parameter(option: Option) -> inspect.Parameter:
    """The typer parameter of one option: None by default (so a given flag is told from the default), with
    the dataclass's default shown in the help."""
    base = str if option.as_text else _base(option.hint)
    decls = [f"{option.flag}/--no-{option.flag[2:]}"] if base is bool else [option.flag]
    choices = _choices(option.hint)
    shown = option.default if option.default not in ("", None, ()) else None
    text = " ".join(filter(None, [option.help, f"(default {_show(shown)})" if shown is not None else ""]))
    metavar = "[" + "|".join(map(str, choices)) + "]" if choices else None
    if option.as_text and not choices:  # the type it will be coerced to, not the text click reads
        metavar = "<" + ("list" if typing.get_origin(option.hint) is tuple else _base(option.hint).__name__) + ">"
    info = typer.Option(None, *decls, help=text or None, show_default=False, metavar=metavar)
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[base], default=info)


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _base(hint: Any) -> type:
    """The click-level type of a field: its own for int, float, bool and Path; str for the rest (Literal,
    tuples), which the config coerces and checks with its own messages."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    return hint if hint in (int, float, bool, Path) else str


def _choices(hint: Any) -> tuple:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else ()


def read_options(path: Path, generated: dict[str, Option], positional: dict[str, str],
                 extras: bool) -> dict[str, Any]:
    """A config file's options, each coerced to its field's type (a wrong one is a UserError naming the
    flag); keys that are no option are one UserError naming them, unless the command takes `extras`."""
    from fieldlab.cli._options import read_config_file

    data = read_config_file(path)
    unknown = sorted(k for k in data if k not in generated and k not in positional)
    if unknown and not extras:
        raise UserError(f"config file {path} has options this command does not take: "
                        + ", ".join("--" + k.replace("_", "-") for k in unknown))
    return {k: (coerce(generated[k], v) if k in generated else v) for k, v in data.items()}


def coerce(option: Option, value: Any) -> Any:
    """A JSON/TOML value as the option's type; None stays None (the default)."""
    from fieldlab.fields import coerce_option

    if value is None:
        return None
    if _base(option.hint) in (str, Path) and not _choices(option.hint) and \
            typing.get_origin(option.hint) is not tuple and not isinstance(value, str):
        raise UserError(f"{option.flag} expects str, got {value!r}")
    if isinstance(value, (dict, list)) and typing.get_origin(option.hint) is not tuple:
        raise UserError(f"{option.flag} expects {getattr(_base(option.hint), '__name__', 'str')}, got {value!r}")
    return coerce_option(option.name, value, option.hint)


def resolved(options: dict[str, Any], generated: dict[str, Option], **fixed: Any) -> dict[str, Any]:
    """Every option after defaults (given, else the dataclass's) plus `fixed` values: what a command writes
    as its resolved config, which `--config` reads back to repeat the run."""
    out = {name: options.get(name, option.default) for name, option in generated.items()}
    return {**fixed, **{k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}}


def write_resolved(path: Path, config: dict[str, Any]) -> None:
    """The resolved config as JSON (paths as strings), written whole and never through a link (beside a
    render's OUT, a link named OUT.config.json would otherwise have its target overwritten)."""
    from fieldlab._safety import replace_file

    text = json.dumps(config, indent=2, default=str) + "\n"
    replace_file(path, lambda tmp: tmp.write_text(text))
